"""Region-feature extraction: images → detector → box selection → feature store.

Two entry points over one loop (`extract_images`):

- the stage `python -m hm_extract extract --spec FILE` (docs/architecture.md §2): inputs
  `prepared` (the images referenced by the prepared splits are extracted), `hm` (the dataset),
  `weights` (the weights dir, full profile); params `variant`, `weights` ("attr" | "plain"),
  `min_boxes`, `max_boxes`. Profile `smoke` builds a random full-size detector (fixed seed) with
  `BUTDConfig.smoke()` input sizes and round-trips it through the upstream pickle format, so the
  real loading path runs; profile `full` needs the real pickle.
- the direct CLI `python -m hm_extract [--variant vgattr3636 …] [--images DIR] [--out DIR] …`;
  with no `--variant` it extracts all six variants.

Resumable: images already in the store are skipped and rows are committed after every batch,
so a killed run loses at most one batch and never writes a row twice.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from hm_extract.config import (
    VARIANTS,
    WEIGHT_FILES,
    WEIGHT_URLS,
    BUTDConfig,
    Variant,
    WeightsKind,
)
from hm_extract.detector import BUTDDetector, random_detector
from hm_extract.selection import select_regions
from hm_extract.weights import dumps_upstream, load_state, load_weights, read_upstream
from hm_shared.dataset import SPLITS, read_prepared
from hm_shared.errors import (
    HmDataError,
    HmError,
    MissingWeightsError,
    SpecError,
    file_system_fault,
)
from hm_shared.features import STORE_FILE, FeatureStore, FeatureStoreWriter, RegionFeatures
from hm_shared.io import atomic_write_json
from hm_shared.spec import StageSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
PREPARED_SPLITS = (*SPLITS, "traindev", "pretrain")
SKIPPED_FILE = "skipped.json"
SMOKE_SEED = 0
DEFAULT_DATA = Path(os.environ.get("HM_DATA", "/data"))  # compose.yaml mounts it at /data
# Where the direct CLI writes: never an orchestrator output path (work/features/<variant>),
# whose next promotion would replace a store made here with the stage's own.
DIRECT_OUT = DEFAULT_DATA / "work" / "direct" / "features"


class UnreadableImageError(HmDataError):
    """An image file that PIL cannot decode."""


@dataclass(frozen=True)
class ImageItem:
    image_id: str
    path: Path


@dataclass
class LoadedImage:
    item: ImageItem
    tensor: torch.Tensor | None  # (3, h, w) float BGR at the detector's input size
    original_size: tuple[int, int]  # (height, width) of the file
    error: str | None = None


@dataclass
class ExtractSummary:
    extracted: int
    already_present: int
    skipped: list[dict[str, str]]


def list_images(images_dir: Path) -> list[ImageItem]:
    """Every image file of a folder (id = file stem), sorted by name."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise HmDataError("image folder not found; expected the meme images here", images_dir)
    items: dict[str, ImageItem] = {}
    for path in sorted(images_dir.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if path.stem in items:
            raise HmDataError(
                f"two images share the id {path.stem!r}: "
                f"{items[path.stem].path.name} and {path.name}",
                images_dir,
            )
        items[path.stem] = ImageItem(path.stem, path)
    return list(items.values())


def prepared_images(prepared_dir: Path, hm_dir: Path) -> list[ImageItem]:
    """The images referenced by the prepared splits, each once, in first-seen order."""
    items: dict[str, ImageItem] = {}
    found = False
    for split in PREPARED_SPLITS:
        path = Path(prepared_dir) / f"{split}.jsonl"
        if not path.is_file():
            continue
        found = True
        for meme in read_prepared(path):
            items.setdefault(meme.id, ImageItem(meme.id, Path(hm_dir) / meme.img))
    if not found:
        raise HmDataError(
            f"no prepared split found; expected {', '.join(PREPARED_SPLITS)} "
            ".jsonl here (run the prepare stage first)",
            prepared_dir,
        )
    return list(items.values())


def load_image(item: ImageItem, detector: BUTDDetector) -> LoadedImage:
    """Decode (EXIF orientation applied, as cv2.imread does) and resize one image."""
    try:
        with Image.open(item.path) as image:
            image = ImageOps.exif_transpose(image)
            size = (image.height, image.width)
            tensor = detector.transform.preprocess(image)
    except (
        OSError,
        UnidentifiedImageError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
    ) as exc:
        return LoadedImage(item, None, (0, 0), f"{type(exc).__name__}: {exc}")
    return LoadedImage(item, tensor, size)


def _batches(items: Sequence[ImageItem], batch_size: int) -> Iterator[list[ImageItem]]:
    for start in range(0, len(items), batch_size):
        yield list(items[start : start + batch_size])


def _prefetched(
    items: Sequence[ImageItem], batch_size: int, detector: BUTDDetector
) -> Iterator[list[LoadedImage]]:
    """Batches of decoded images; the next batch decodes in threads while one is detected."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending: list[Future[LoadedImage]] | None = None
        for batch in _batches(items, batch_size):
            submitted = [pool.submit(load_image, item, detector) for item in batch]
            if pending is not None:
                yield [f.result() for f in pending]
            pending = submitted
        if pending is not None:
            yield [f.result() for f in pending]


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


def extract_images(
    detector: BUTDDetector,
    items: Sequence[ImageItem],
    out_dir: Path,
    min_boxes: int,
    max_boxes: int,
    batch_size: int = 1,
    skip_unreadable: bool = False,
    description: str = "extract",
) -> ExtractSummary:
    """Detect and store the regions of every image of `items` not yet in the store `out_dir`.

    An unreadable image raises `UnreadableImageError` naming it, or with `skip_unreadable` is
    recorded in `out_dir/skipped.json` (id, path, error) and left out.
    """
    if min_boxes < 1 or max_boxes < min_boxes:
        raise SpecError(f"need 1 <= min_boxes <= max_boxes, got {min_boxes}, {max_boxes}")
    if batch_size < 1:
        raise SpecError(f"batch size must be at least 1, got {batch_size}")
    out_dir = Path(out_dir)
    skipped_path = out_dir / SKIPPED_FILE
    skipped = read_skipped(out_dir)
    extracted = 0
    with FeatureStoreWriter(out_dir, feature_dim=detector.config.feature_dim) as writer:
        todo = [
            item
            for item in items
            if item.image_id not in writer
            and not (skip_unreadable and _still_unreadable(item, skipped))
        ]
        present = sum(item.image_id in writer for item in items)
        with _progress() as progress:
            task = progress.add_task(description, total=len(todo))
            for batch in _prefetched(todo, batch_size, detector):
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
                if readable:
                    detections = detector([loaded.tensor for loaded in readable])
                    for loaded, det in zip(readable, detections, strict=True):
                        regions = select_regions(det, loaded.original_size, min_boxes, max_boxes)
                        writer.add(
                            RegionFeatures(
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
                        )
                        extracted += 1
                writer.flush()  # commit every batch: a killed run resumes after it
                if skipped:
                    atomic_write_json(skipped_path, sorted(skipped.values(), key=lambda s: s["id"]))
                progress.advance(task, len(batch))
    return ExtractSummary(extracted, present, sorted(skipped.values(), key=lambda s: s["id"]))


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
    items: Sequence[ImageItem], out_dir: Path, skip_unreadable: bool = False
) -> list[ImageItem]:
    """The items not yet in the store at `out_dir` (all of them when there is no store), less
    the unchanged images recorded as unreadable when `skip_unreadable`."""
    skipped = read_skipped(out_dir) if skip_unreadable else {}
    todo = [item for item in items if not _still_unreadable(item, skipped)]
    if not (Path(out_dir) / STORE_FILE).is_file():
        return todo
    store = FeatureStore(Path(out_dir))
    return [item for item in todo if item.image_id not in store]


def run_extraction(
    items: Sequence[ImageItem],
    out_dir: Path,
    build: Callable[[], BUTDDetector],
    min_boxes: int,
    max_boxes: int,
    batch_size: int,
    skip_unreadable: bool,
    description: str,
) -> ExtractSummary:
    """`extract_images`, building the detector only when some image is still missing."""
    if not pending_images(items, out_dir, skip_unreadable):
        ids = {item.image_id for item in items}
        recorded = read_skipped(out_dir) if skip_unreadable else {}
        skipped = [recorded[i] for i in sorted(recorded) if i in ids]
        return ExtractSummary(0, len(items) - len(skipped), skipped)
    return extract_images(
        build(),
        items,
        out_dir,
        min_boxes,
        max_boxes,
        batch_size=batch_size,
        skip_unreadable=skip_unreadable,
        description=description,
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
        if report.filled:  # allowed by rule (weights.OPTIONAL), but the log says so
            print(
                f"{weights_file}: {len(report.filled)} tensors absent from the file were set by "
                f"rule (frozen BN statistics, anchors): {', '.join(report.filled[:6])}"
                + (" …" if len(report.filled) > 6 else ""),
                file=sys.stderr,
                flush=True,
            )
    return detector.eval().to(device)


def _resolve_device(device: str) -> str:
    if device == "cuda" and not torch.cuda.is_available():
        raise SpecError("device cuda requested but torch sees no GPU; use --device cpu")
    return device


def extract_stage(spec: StageSpec) -> None:
    """Stage entry (docs/architecture.md §2): write the feature store into the attempt dir."""
    expected = {"variant", "weights", "min_boxes", "max_boxes"}
    if set(spec.params) != expected:
        raise SpecError(
            f"stage {spec.stage}: extract takes params {sorted(expected)}, got "
            f"{sorted(spec.params)}"
        )
    weights = spec.param("weights")
    if weights not in WEIGHT_FILES:
        raise SpecError(
            f"stage {spec.stage}: param weights = {weights!r}; expected one of "
            f"{sorted(WEIGHT_FILES)}"
        )
    min_boxes, max_boxes = spec.param("min_boxes"), spec.param("max_boxes")
    for name, value in (("min_boxes", min_boxes), ("max_boxes", max_boxes)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"stage {spec.stage}: param {name} = {value!r}; expected an int")
    items = prepared_images(spec.path("prepared"), spec.path("hm"))
    smoke = spec.profile == "smoke"
    weights_file = None if smoke else spec.path("weights") / WEIGHT_FILES[weights]
    device = _resolve_device(spec.device)
    summary = run_extraction(
        items,
        spec.output_dir,
        lambda: build_detector(weights, smoke, weights_file, device),
        min_boxes,
        max_boxes,
        batch_size=4 if device == "cuda" else 1,
        skip_unreadable=False,
        description=f"extract {spec.param('variant')}",
    )
    print(
        f"{spec.param('variant')}: extracted {summary.extracted}, already present "
        f"{summary.already_present}",
        file=sys.stderr,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hm_extract",
        description="Extract bottom-up-attention region features of a folder of images into a "
        "feature store. Example: python -m hm_extract --variant vgattr3636 --topk 20",
        epilog="The stage form, used by the orchestrator: python -m hm_extract extract --spec "
        "FILE.",
    )
    parser.add_argument(
        "--variant",
        action="append",
        choices=sorted(VARIANTS),
        help="feature set (weights and box counts as upstream); repeat for several "
        "(default: all six, as upstream's hm_feats.bash)",
    )
    parser.add_argument(
        "--images",
        type=Path,
        default=DEFAULT_DATA / "hm" / "img",
        help="folder of images (default: /data/hm/img)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="feature store, one variant only (default: /data/work/direct/features/<variant>: "
        "a place the orchestrator never writes)",
    )
    parser.add_argument(
        "--topk", type=int, default=None, help="only the first N images by file name"
    )
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per forward (default 4 on cuda, 1 on cpu)",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="upstream .pkl (default: /data/weights/<file of the variant>)",
    )
    parser.add_argument(
        "--profile",
        choices=("full", "smoke"),
        default="full",
        help="smoke: random full-size detector, small inputs (no weights needed)",
    )
    parser.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="record unreadable images in skipped.json instead of failing",
    )
    return parser


def _missing_weights(variants: Sequence[Variant], weights_dir: Path, given: Path | None) -> None:
    """Fail before any extraction when a variant's upstream pickle is absent (full profile),
    naming every missing file at once."""
    missing: dict[Path, list[Variant]] = {}
    for variant in variants:
        path = given or weights_dir / WEIGHT_FILES[variant.weights]
        if not path.is_file():
            missing.setdefault(path, []).append(variant)
    if missing:
        lines = []
        for path, needing in missing.items():
            kinds = dict.fromkeys(v.weights for v in needing)
            sources = ", ".join(f"{WEIGHT_FILES[k]} from {WEIGHT_URLS[k]}" for k in kinds)
            names = ", ".join(v.name for v in needing)
            lines.append(f"  {path}  (variants {names}; {sources})")
        raise MissingWeightsError(
            f"{len(missing)} detector weights file(s) not found (or run with --profile smoke):\n"
            + "\n".join(lines),
            weights_dir if given is None else given,
        )


def cli(argv: Sequence[str] | None = None) -> int:
    """The direct CLI; returns the exit code (HmError classes map to theirs)."""
    args = _parser().parse_args(argv)
    variants = [VARIANTS[name] for name in dict.fromkeys(args.variant or VARIANTS)]
    smoke = args.profile == "smoke"
    try:
        if args.topk is not None and args.topk < 1:
            raise SpecError(f"--topk must be at least 1, got {args.topk}")
        if args.out is not None and len(variants) > 1:
            raise SpecError("--out names one store: give exactly one --variant with it")
        device = _resolve_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        batch_size = args.batch_size or (4 if device == "cuda" else 1)
        if not smoke:
            _missing_weights(variants, DEFAULT_DATA / "weights", args.weights)
        items = list_images(args.images)[: args.topk]
        for variant in variants:
            weights_file = args.weights or DEFAULT_DATA / "weights" / WEIGHT_FILES[variant.weights]
            out = args.out or DIRECT_OUT / variant.name
            summary = run_extraction(
                items,
                out,
                lambda v=variant, w=weights_file: build_detector(v.weights, smoke, w, device),
                variant.min_boxes,
                variant.max_boxes,
                batch_size=batch_size,
                skip_unreadable=args.skip_unreadable,
                description=f"extract {variant.name}",
            )
            print(
                f"{variant.name}: extracted {summary.extracted}, already present "
                f"{summary.already_present}, skipped {len(summary.skipped)} -> {out}",
                file=sys.stderr,
            )
    except HmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        if exc.filename is None:
            raise
        fault = file_system_fault(exc)  # e.g. DATA_DIR not writable by the container's user
        print(f"error: {fault}", file=sys.stderr)
        return fault.exit_code
    return 0


__all__ = [
    "ExtractSummary",
    "ImageItem",
    "UnreadableImageError",
    "build_detector",
    "cli",
    "extract_images",
    "extract_stage",
    "list_images",
    "load_image",
    "pending_images",
    "prepared_images",
    "run_extraction",
]
