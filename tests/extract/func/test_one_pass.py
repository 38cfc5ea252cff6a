"""One detector pass per checkpoint gives, byte for byte, the stores of one pass per variant.

Full-size random detectors (the real layer shapes and loading path) on the synthetic images:
at the smoke input size for every variant, and at the real input size (600/1000, 300
proposals, 14×14 RoIPool) on two images.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hm_extract.config import VARIANTS, BUTDConfig
from hm_extract.detector import BUTDDetector, random_detector
from hm_extract.extract import StoreTarget, build_detector, extract_images
from hm_extract.images import list_images

pytestmark = pytest.mark.slow


def _store_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _assert_one_pass_matches_per_variant(
    detector: BUTDDetector, weights: str, images_dir: Path, out: Path
) -> None:
    items = list_images(images_dir)
    variants = [v for v in VARIANTS.values() if v.weights == weights]
    shared = [
        StoreTarget(v.name, out / "one-pass" / v.name, v.min_boxes, v.max_boxes) for v in variants
    ]
    summary = extract_images(detector, items, shared)
    assert summary.detected == len(items)
    for variant, target in zip(variants, shared, strict=True):
        alone = StoreTarget(
            variant.name, out / "per-variant" / variant.name, variant.min_boxes, variant.max_boxes
        )
        extract_images(detector, items, [alone])
        assert _store_bytes(target.out_dir) == _store_bytes(alone.out_dir), variant.name


@pytest.mark.parametrize("weights", ["attr", "plain"])
def test_smoke_size_every_variant(weights: str, tmp_path: Path, write_images) -> None:
    write_images(tmp_path / "img")
    detector = build_detector(weights, smoke=True, weights_file=None, device="cpu")
    _assert_one_pass_matches_per_variant(detector, weights, tmp_path / "img", tmp_path)


@pytest.mark.parametrize("weights", ["attr", "plain"])
def test_full_size_two_images(weights: str, tmp_path: Path, write_images) -> None:
    write_images(tmp_path / "img", ((500, 700), (420, 380)))
    detector = random_detector(BUTDConfig.for_weights(weights), seed=0)
    _assert_one_pass_matches_per_variant(detector, weights, tmp_path / "img", tmp_path)
