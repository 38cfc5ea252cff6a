"""Fixtures shared by the torch tests: synthetic datasets, prepared like the pipeline does.

torch runs single-threaded here: the CI machine has 2 cores shared by several suites, and
OpenMP's spinning threads under contention make small ops 100× slower (measured: BatchNorm on a
16×4×8×8 batch, 0.2 ms with 1 thread, 70 ms with 2 on a loaded machine).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from hm_shared.prepare import prepare
from hm_shared.synthetic import generate

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")  # for the stage subprocesses

LEARNING_SIZES = {
    "train": 360,
    "dev_seen": 120,
    "dev_unseen": 8,
    "test_seen": 20,
    "test_unseen": 20,
}
TINY_SIZES = {"train": 40, "dev_seen": 20, "dev_unseen": 4, "test_seen": 8, "test_unseen": 8}


def _data_root(root: Path, sizes: dict[str, int], seed: int) -> Path:
    """`root/hm` (synthetic dataset) and `root/work/prepared` (its prepared splits)."""
    generate(root / "hm", seed=seed, sizes=sizes)
    prepare(root / "hm", root / "work" / "prepared")
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _data_root(tmp_path_factory.mktemp("tiny"), TINY_SIZES, seed=3)


@pytest.fixture(scope="session")
def learning_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _data_root(tmp_path_factory.mktemp("learning"), LEARNING_SIZES, seed=0)
