"""The direct extraction CLI: `python -m hm_extract [--variant vgattr3636 …] [--images DIR] …`.

What `docker compose run extract` runs. With no `--variant` it extracts all six variants, one
detector pass per checkpoint (the named variants are grouped by the checkpoint they need).
It writes to `data/work/direct/features/<variant>` by default, a place no orchestrator stage
owns (docs/architecture.md §4).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from hm_extract.config import VARIANTS, WEIGHT_FILES, WEIGHT_URLS, Variant, WeightsKind
from hm_extract.extract import (
    StoreTarget,
    build_detector,
    default_workers,
    resolve_device,
    run_extraction,
)
from hm_extract.images import list_images
from hm_shared.errors import MissingWeightsError, SpecError
from hm_shared.stage_main import exit_code_of

DEFAULT_DATA = Path(os.environ.get("HM_DATA", "/data"))  # compose.yaml mounts it at /data
# Where the direct CLI writes: never an orchestrator output path (work/features/…), whose next
# promotion would set a store made here aside for the stage's own.
DIRECT_OUT = DEFAULT_DATA / "work" / "direct" / "features"


def _by_checkpoint(variants: Sequence[Variant]) -> dict[WeightsKind, list[Variant]]:
    groups: dict[WeightsKind, list[Variant]] = {}
    for variant in variants:
        groups.setdefault(variant.weights, []).append(variant)
    return groups


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
    return exit_code_of(lambda: _extract(args))


def _extract(args: argparse.Namespace) -> None:
    variants = [VARIANTS[name] for name in dict.fromkeys(args.variant or VARIANTS)]
    smoke = args.profile == "smoke"
    if args.topk is not None and args.topk < 1:
        raise SpecError(f"--topk must be at least 1, got {args.topk}")
    if args.out is not None and len(variants) > 1:
        raise SpecError("--out names one store: give exactly one --variant with it")
    device = resolve_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    batch_size = args.batch_size or (4 if device == "cuda" else 1)
    if not smoke:
        _missing_weights(variants, DEFAULT_DATA / "weights", args.weights)
    items = list_images(args.images)[: args.topk]
    for weights, group in _by_checkpoint(variants).items():
        weights_file = args.weights or DEFAULT_DATA / "weights" / WEIGHT_FILES[weights]
        targets = [
            StoreTarget(v.name, args.out or DIRECT_OUT / v.name, v.min_boxes, v.max_boxes)
            for v in group
        ]
        summary = run_extraction(
            items,
            targets,
            lambda k=weights, w=weights_file: build_detector(k, smoke, w, device),
            batch_size=batch_size,
            skip_unreadable=args.skip_unreadable,
            description=f"extract {', '.join(v.name for v in group)}",
            workers=default_workers(device),
        )
        print(f"{weights}: detector pass over {summary.detected} images", file=sys.stderr)
        for target in targets:
            print(
                f"{target.name}: extracted {summary.added[target.name]}, already present "
                f"{summary.already_present[target.name]}, skipped {len(summary.skipped)} "
                f"-> {target.out_dir}",
                file=sys.stderr,
            )


__all__ = ["DIRECT_OUT", "cli"]
