"""Fixtures for every environment's tests: synthetic datasets on disk, and tiny custom ones.

Importable with hm_shared's dependencies only (numpy, pillow, imagehash): no torch, no paddle.
"""

from __future__ import annotations

import json
import random
import stat
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from spec_helpers import make_spec as _make_spec

from hm_shared.dataset import SPLITS
from hm_shared.spec import StageSpec
from hm_shared.synthetic import generate

# ~116 memes: big enough for both classes and every kind of confounder in each labelled split,
# small enough to generate in about two seconds.
SMALL_SIZES = {"train": 60, "dev_seen": 16, "dev_unseen": 16, "test_seen": 12, "test_unseen": 12}


def set_read_only(root: Path, read_only: bool) -> None:
    """chmod a tree read-only (files 0444, dirs 0555) or back to writable (0644 / 0755)."""
    for path in [root, *root.rglob("*")]:
        if path.is_dir():
            path.chmod(0o555 if read_only else 0o755)
        else:
            path.chmod(0o444 if read_only else 0o644)


def tree_snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Relative path → (content, mtime_ns, mode) of everything under `root` (dirs: no content)."""
    snap = {}
    for path in sorted([root, *root.rglob("*")]):
        st = path.lstat()
        content = b"" if stat.S_ISDIR(st.st_mode) else path.read_bytes()
        snap[path.relative_to(root).as_posix()] = (content, st.st_mtime_ns, st.st_mode)
    return snap


@pytest.fixture(scope="session")
def synthetic_sizes() -> dict[str, int]:
    """The split sizes of `synthetic_hm` (seed 0): `hm_shared.synthetic.plan(0, sizes)`."""
    return dict(SMALL_SIZES)


@pytest.fixture
def make_spec() -> Callable[..., StageSpec]:
    """`make_spec(stage, root, inputs=…, params=…, **fields)` (tests/spec_helpers.py)."""
    return _make_spec


@pytest.fixture
def snapshot() -> Callable[[Path], dict[str, tuple[bytes, int, int]]]:
    """`snapshot(root)`: every path under root with its content, mtime and mode, to compare."""
    return tree_snapshot


@pytest.fixture
def read_only() -> Iterator[Callable[[Path], Path]]:
    """`read_only(root)` chmods a tree read-only for the test, writable again afterwards."""
    roots: list[Path] = []

    def make(root: Path) -> Path:
        set_read_only(root, True)
        roots.append(root)
        return root

    yield make
    for root in roots:
        set_read_only(root, False)


@pytest.fixture(scope="session")
def synthetic_hm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A small synthetic dataset (SMALL_SIZES, seed 0, string ids), read-only. Do not modify."""
    root = tmp_path_factory.mktemp("synthetic") / "hm"
    generate(root, seed=0, sizes=SMALL_SIZES)
    set_read_only(root, True)
    yield root
    set_read_only(root, False)


@pytest.fixture(scope="session")
def synthetic_prepared(
    synthetic_hm: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """The prepare stage's output for `synthetic_hm` (the `work/prepared` files), read-only."""
    from hm_shared.prepare import prepare  # imagehash only here: most fixtures never need it

    out = tmp_path_factory.mktemp("synthetic_prepared") / "prepared"
    prepare(synthetic_hm, out)
    set_read_only(out, True)
    yield out
    set_read_only(out, False)


def _draw(seed: str, size: tuple[int, int]) -> Image.Image:
    # 8x8 random colour blocks: distinct seeds give distinct perceptual hashes.
    rng = random.Random(seed)
    small = Image.new("RGB", (8, 8))
    small.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(64)])
    return small.resize(size, Image.Resampling.NEAREST)


class HmFactory:
    """Builds tiny datasets: `make_hm()` is a valid one; pass rows to change any split.

    Rows are dicts (written as JSON) or strings (written verbatim, for malformed lines). Every
    dict row's `img` gets a small PNG (64x48, 8x8 random colour blocks seeded by the stem),
    unless its stem is in `skip_images`; `same_image` maps a stem to another whose pixels it
    copies (a duplicate image).
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self.count = 0

    @staticmethod
    def row(stem: str, label: int | None = 0, text: str | None = None, **extra: Any) -> dict:
        """One released-format row; `label=None` leaves the key out (a test-split row)."""
        row: dict[str, Any] = {
            "id": stem,
            "img": f"img/{stem}.png",
            "text": f"meme number {stem}" if text is None else text,
        }
        if label is not None:
            row["label"] = label
        return row | extra

    def default_rows(self) -> dict[str, list[dict]]:
        """A valid dataset: 8 train, 4 dev_seen, 4 dev_unseen (2 shared), 3 + 3 test memes."""
        row = self.row
        return {
            "train": [row(f"{i:05d}", label=i % 2) for i in range(1, 9)],
            "dev_seen": [row(f"{i:05d}", label=i % 2) for i in range(11, 15)],
            "dev_unseen": [row("00013", 1), row("00014", 0), row("00021", 0), row("00022", 0)],
            "test_seen": [row(f"{i:05d}", label=None) for i in range(31, 34)],
            "test_unseen": [row(f"{i:05d}", label=None) for i in range(41, 44)],
        }

    def __call__(
        self,
        splits: Mapping[str, Sequence[Mapping[str, Any] | str]] | None = None,
        *,
        same_image: Mapping[str, str] | None = None,
        skip_images: Collection[str] = (),
        extra_images: Collection[str] = (),
        omit: Collection[str] = (),
    ) -> Path:
        """Write a dataset (default rows, overridden per split by `splits`); `omit` drops files.

        `extra_images` are stems drawn too (images of verbatim string rows).
        """
        self.count += 1
        root = self.base / f"hm{self.count}"
        (root / "img").mkdir(parents=True)
        rows = self.default_rows() | dict(splits or {})
        same_image = same_image or {}
        for stem in extra_images:
            _draw(stem, (64, 48)).save(root / "img" / f"{stem}.png", format="PNG")
        for split in SPLITS:
            if split in omit:
                continue
            lines = [r if isinstance(r, str) else json.dumps(r) for r in rows[split]]
            (root / f"{split}.jsonl").write_text("".join(line + "\n" for line in lines))
            for r in rows[split]:
                if isinstance(r, str) or not isinstance(r.get("img"), str):
                    continue
                path = root / r["img"]
                stem = Path(r["img"]).stem
                inside = path.resolve().is_relative_to((root / "img").resolve())
                if stem in skip_images or path.exists() or not inside:
                    continue
                _draw(same_image.get(stem, stem), (64, 48)).save(path, format="PNG")
        return root


@pytest.fixture
def make_hm(tmp_path: Path) -> HmFactory:
    """Factory of tiny custom datasets under tmp_path (see HmFactory)."""
    return HmFactory(tmp_path / "datasets")
