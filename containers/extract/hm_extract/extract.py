"""Region-feature extraction: images → one detector pass → every variant's box selection → stores.

The six variants come from two detector checkpoints and differ only in the box selection after
the detector, so one detector pass per checkpoint and image serves all of that checkpoint's
variants (`extract_images` with several `StoreTarget`s; with one target it is the old
per-variant path, and the stores are byte-identical either way).

The stage `python -m hm_extract extract --spec FILE` (docs/architecture.md §2) extracts one
checkpoint: inputs `prepared` (the images referenced by the prepared splits) and `hm` (the
dataset), `weights` (full profile); params `weights` ("attr" | "plain") and `variants`
({name: {"min_boxes", "max_boxes"}}). It writes `<output>/<variant>/` per variant and
`<output>/stats.json` (images, detector passes; not part of the output hash). Profile `smoke`
builds a random full-size detector (fixed seed) with `BUTDConfig.smoke()` input sizes and
round-trips it through the upstream pickle format, so the real loading path runs; profile
`full` needs the real pickle. The direct CLI is `hm_extract.cli`.

Resumable: images already in every store are skipped and rows are committed every
`COMMIT_EVERY_S` seconds and at the end, so a killed run loses at most those seconds of work and
never writes a row twice.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from hm_extract.config import WEIGHT_FILES, WEIGHT_URLS, BUTDConfig, WeightsKind
from hm_extract.detector import BUTDDetector, random_detector
from hm_extract.images import (
    ImageItem,
    LoadedImage,
    UnreadableImageError,
    decoded_batches,
    prepared_images,
)
from hm_extract.selection import select_regions
from hm_extract.weights import dumps_upstream, load_state, load_weights, read_upstream
from hm_shared.errors import MissingWeightsError, SpecError
from hm_shared.features import STORE_FILE, FeatureStore, FeatureStoreWriter, RegionFeatures
from hm_shared.io import atomic_write_json
from hm_shared.spec import STATS_FILE, StageSpec

SKIPPED_FILE = "skipped.json"
SMOKE_SEED = 0
# Rows are committed (fsync of every store) at least this often and after the last batch: a
# killed run redoes at most these seconds of work. Committing after every image cost more than
# a smoke-size detector pass (7 files fsynced per store).
COMMIT_EVERY_S = 5.0


@dataclass(frozen=True)
class StoreTarget:
    """One variant's store that a detector pass fills."""

    name: str
    out_dir: Path
    min_boxes: int
    max_boxes: int


@dataclass
class ExtractSummary:
    detected: int  # images that went through the detector
    added: dict[str, int] = field(default_factory=dict)  # target → images added
    already_present: dict[str, int] = field(default_factory=dict)  # target → found in the store
    skipped: list[dict[str, str]] = field(default_factory=list)


def _progress() -> Progress:
    # stderr: the stage's stdout stays free, and the runtime copies stderr into the stage log.
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )


def _check_targets(targets: Sequence[StoreTarget], batch_size: int) -> None:
    if not targets:
        raise SpecError("nothing to extract: no variant given")
    for target in targets:
        if target.min_boxes < 1 or target.max_boxes < target.min_boxes:
            raise SpecError(
                f"{target.name}: need 1 <= min_boxes <= max_boxes, got "
                f"{target.min_boxes}, {target.max_boxes}"
            )
    if len({Path(t.out_dir) for t in targets}) != len(targets):
        raise SpecError("two variants would share one store folder")
    if batch_size < 1:
        raise SpecError(f"batch size must be at least 1, got {batch_size}")


def default_workers(device: str) -> int:
    """Decoding processes: enough to keep a GPU fed; one on the CPU (the detector needs the
    cores, one worker overlaps decoding with detection)."""
    return min(8, os.cpu_count() or 1) if device == "cuda" else 1


def extract_images(
    detector: BUTDDetector,
    items: Sequence[ImageItem],
    targets: Sequence[StoreTarget],
    batch_size: int = 1,
    skip_unreadable: bool = False,
    description: str = "extract",
    workers: int = 0,
) -> ExtractSummary:
    """Detect each image of `items` missing from some target's store once, and add its regions
    to every store that lacks them.

    An unreadable image raises `UnreadableImageError` naming it, or with `skip_unreadable` is
    recorded in each store's `skipped.json` (id, path, error) and left out.
    """
    _check_targets(targets, batch_size)
    skipped = read_skipped(targets[0].out_dir)
    summary = ExtractSummary(detected=0)
    with ExitStack() as stack:
        dim = detector.config.feature_dim
        writers = {t.name: stack.enter_context(FeatureStoreWriter(t.out_dir, dim)) for t in targets}
        summary.added = dict.fromkeys(writers, 0)
        summary.already_present = {
            name: sum(item.image_id in writer for item in items) for name, writer in writers.items()
        }
        todo = [
            item
            for item in items
            if any(item.image_id not in writer for writer in writers.values())
            and not (skip_unreadable and _still_unreadable(item, skipped))
        ]
        progress = stack.enter_context(_progress())
        task = progress.add_task(description, total=len(todo))
        preprocess = detector.transform.preprocess
        committed = time.monotonic()
        for batch in decoded_batches(todo, batch_size, preprocess, workers):
            readable = _readable(batch, skip_unreadable, skipped)
            if readable:
                detections = detector([loaded.tensor for loaded in readable])
                summary.detected += len(readable)
                for loaded, det in zip(readable, detections, strict=True):
                    for target in targets:
                        writer = writers[target.name]
                        if loaded.item.image_id in writer:
                            continue  # a kill between two stores' commits: this one has it
                        regions = select_regions(
                            det, loaded.original_size, target.min_boxes, target.max_boxes
                        )
                        writer.add(_row(loaded, regions))
                        summary.added[target.name] += 1
            if time.monotonic() - committed >= COMMIT_EVERY_S:
                _commit(writers.values(), targets, skipped)  # a killed run resumes after it
                committed = time.monotonic()
            progress.advance(task, len(batch))
        _commit(writers.values(), targets, skipped)
    summary.skipped = sorted(skipped.values(), key=lambda s: s["id"])
    return summary


def _commit(
    writers: Iterable[FeatureStoreWriter],
    targets: Sequence[StoreTarget],
    skipped: dict[str, dict[str, str]],
) -> None:
    for writer in writers:
        writer.flush()
    if skipped:
        entries = sorted(skipped.values(), key=lambda s: s["id"])
        for target in targets:
            atomic_write_json(Path(target.out_dir) / SKIPPED_FILE, entries)


def _readable(
    batch: list[LoadedImage], skip_unreadable: bool, skipped: dict[str, dict[str, str]]
) -> list[LoadedImage]:
    readable = []
    for loaded in batch:
        if loaded.error is None:
            readable.append(loaded)
            continue
        if not skip_unreadable:
            raise UnreadableImageError(
                f"cannot read image {loaded.item.image_id}: {loaded.error} "
                "(replace the file, or pass --skip-unreadable to leave it out)",
                loaded.item.path,
            )
        skipped[loaded.item.image_id] = {
            "id": loaded.item.image_id,
            "path": str(loaded.item.path),
            "error": loaded.error,
            "stat": _stat(loaded.item.path),
        }
    return readable


def _row(loaded: LoadedImage, regions: Any) -> RegionFeatures:
    return RegionFeatures(
        image_id=loaded.item.image_id,
        image_h=loaded.original_size[0],
        image_w=loaded.original_size[1],
        boxes=regions.boxes,
        features=regions.features,
        object_ids=regions.object_ids,
        object_conf=regions.object_conf,
        attr_ids=regions.attr_ids,
        attr_conf=regions.attr_conf,
    )


def _stat(path: Path) -> str:
    try:
        info = Path(path).stat()
    except OSError:
        return "absent"
    return f"{info.st_size}:{info.st_mtime_ns}"


def read_skipped(out_dir: Path) -> dict[str, dict[str, str]]:
    """id → entry of `out_dir/skipped.json` (id, path, error, stat of the file when it failed)."""
    path = Path(out_dir) / SKIPPED_FILE
    if not path.is_file():
        return {}
    return {s["id"]: s for s in json.loads(path.read_text(encoding="utf-8"))}


def _still_unreadable(item: ImageItem, skipped: dict[str, dict[str, str]]) -> bool:
    # skipped before and the file unchanged since: decoding it again cannot succeed; a replaced
    # file (other size or mtime) is tried again
    entry = skipped.get(item.image_id)
    return entry is not None and entry.get("stat") == _stat(item.path)


def pending_images(
    items: Sequence[ImageItem], targets: Sequence[StoreTarget], skip_unreadable: bool = False
) -> list[ImageItem]:
    """The items missing from some target's store (all of them where a store does not exist
    yet), less the unchanged images recorded as unreadable when `skip_unreadable`."""
    skipped = read_skipped(targets[0].out_dir) if skip_unreadable else {}
    todo = [item for item in items if not _still_unreadable(item, skipped)]
    stores = []
    for target in targets:
        if not (Path(target.out_dir) / STORE_FILE).is_file():
            return todo
        stores.append(FeatureStore(Path(target.out_dir)))
    return [item for item in todo if any(item.image_id not in store for store in stores)]


def run_extraction(
    items: Sequence[ImageItem],
    targets: Sequence[StoreTarget],
    build: Callable[[], BUTDDetector],
    batch_size: int,
    skip_unreadable: bool,
    description: str,
    workers: int = 0,
) -> ExtractSummary:
    """`extract_images`, building the detector only when some image is still missing."""
    _check_targets(targets, batch_size)
    if not pending_images(items, targets, skip_unreadable):
        ids = {item.image_id for item in items}
        recorded = read_skipped(targets[0].out_dir) if skip_unreadable else {}
        skipped = [recorded[i] for i in sorted(recorded) if i in ids]
        present = len(items) - len(skipped)
        return ExtractSummary(
            0, {t.name: 0 for t in targets}, {t.name: present for t in targets}, skipped
        )
    return extract_images(
        build(),
        items,
        targets,
        batch_size=batch_size,
        skip_unreadable=skip_unreadable,
        description=description,
        workers=workers,
    )


def build_detector(
    weights: WeightsKind, smoke: bool, weights_file: Path | None, device: str
) -> BUTDDetector:
    """The detector of a profile: random round-tripped (`smoke`) or the real upstream pickle."""
    config = BUTDConfig.for_weights(weights)
    if smoke:
        source = random_detector(config.smoke(), seed=SMOKE_SEED)
        detector = BUTDDetector(config.smoke())
        data = dumps_upstream(source)  # the real reader and rename table run on this
        del source
        load_state(
            detector, read_upstream(data, "<smoke random weights>"), "<smoke random weights>"
        )
    else:
        if weights_file is None or not Path(weights_file).is_file():
            name = WEIGHT_FILES[weights]
            where = weights_file if weights_file is not None else name
            raise MissingWeightsError(
                f"detector weights {name} not found; download {WEIGHT_URLS[weights]} "
                "into the weights folder (or run with --profile smoke)",
                where,
            )
        detector = BUTDDetector(config)
        report = load_weights(detector, Path(weights_file))
        if report.allowed:  # set by rule (weights.OPTIONAL: BN statistics, anchors): say so
            print(f"{weights_file}: {report.describe(limit=6)}", file=sys.stderr, flush=True)
    if device == "cuda":
        # fp32 as upstream: TF32 convolutions (cuDNN's default) and autotuned algorithms would
        # change features in the last bits and, through the NMS loop, which boxes are kept.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    return detector.eval().to(device)


def resolve_device(device: str) -> str:
    if device == "cuda" and not torch.cuda.is_available():
        raise SpecError("device cuda requested but torch sees no GPU; use --device cpu")
    return device


def _stage_targets(spec: StageSpec) -> list[StoreTarget]:
    variants = spec.param("variants")
    if not isinstance(variants, Mapping) or not variants:
        raise SpecError(
            f"stage {spec.stage}: param variants = {variants!r}; expected a table "
            "{name: {min_boxes, max_boxes}}"
        )
    targets = []
    for name, boxes in sorted(variants.items()):
        if not isinstance(boxes, Mapping) or set(boxes) != {"min_boxes", "max_boxes"}:
            raise SpecError(
                f"stage {spec.stage}: variant {name} = {boxes!r}; expected min_boxes, max_boxes"
            )
        for key, value in boxes.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise SpecError(
                    f"stage {spec.stage}: variant {name} {key} = {value!r}; expected an int"
                )
        targets.append(
            StoreTarget(name, spec.output_dir / name, boxes["min_boxes"], boxes["max_boxes"])
        )
    return targets


def extract_stage(spec: StageSpec) -> None:
    """Stage entry (docs/architecture.md §2): every variant store of one checkpoint, one
    detector pass, into the attempt dir."""
    required, optional = {"weights", "variants"}, {"detector"}
    if not required <= set(spec.params) <= required | optional:
        raise SpecError(
            f"stage {spec.stage}: extract takes params {sorted(required)} and optionally "
            f"{sorted(optional)}, got {sorted(spec.params)}"
        )
    weights = spec.param("weights")
    if weights not in WEIGHT_FILES:
        raise SpecError(
            f"stage {spec.stage}: param weights = {weights!r}; expected one of "
            f"{sorted(WEIGHT_FILES)}"
        )
    targets = _stage_targets(spec)
    items = prepared_images(spec.path("prepared"), spec.path("hm"))
    # the released pickle the recipe names (full profile); without one a random detector
    detector = spec.params.get("detector")
    smoke = detector is None
    weights_file = None
    if detector is not None:
        try:
            weights_file = spec.weight(str(detector), "detector weights")
        except MissingWeightsError as exc:
            raise MissingWeightsError(f"{exc}; download {WEIGHT_URLS[weights]}") from exc
    device = resolve_device(spec.device)
    summary = run_extraction(
        items,
        targets,
        lambda: build_detector(weights, smoke, weights_file, device),
        batch_size=4 if device == "cuda" else 1,
        skip_unreadable=False,
        description=f"extract {weights} ({', '.join(t.name for t in targets)})",
        workers=default_workers(device),
    )
    # The detector-pass counter adds up over the runs of this attempt dir that completed (a
    # killed run writes none; the next one detects what it left uncommitted and counts that):
    # the cost, not the content, so not hashed.
    stats_path = spec.output_dir / STATS_FILE
    before = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    atomic_write_json(
        stats_path,
        {
            "weights": weights,
            "variants": [t.name for t in targets],
            "images": len(items),
            "detector_images": before.get("detector_images", 0) + summary.detected,
        },
    )
    print(
        f"{weights}: detector pass over {summary.detected} of {len(items)} images; "
        + ", ".join(
            f"{t.name} added {summary.added[t.name]}, already present "
            f"{summary.already_present[t.name]}"
            for t in targets
        ),
        file=sys.stderr,
    )


__all__ = [
    "ExtractSummary",
    "StoreTarget",
    "build_detector",
    "default_workers",
    "extract_images",
    "extract_stage",
    "pending_images",
    "read_skipped",
    "resolve_device",
    "run_extraction",
]
