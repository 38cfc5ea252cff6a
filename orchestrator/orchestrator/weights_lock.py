"""The weights lock: the sha256 and size of every pretrained file in data/weights.

`orchestrator weights fetch` records each weight it places (or finds in place) in
`data/weights/weights.lock.json`; `plan` and `run` check the files the selected stages read
against it, and against a checksum the recipe pins (`sha256`, a prefix of at least 8 hex digits:
torchvision's file names carry one). A size is checked by `stat`; a content hash comes from the
hash cache (state/hashes.json), so an unchanged file is hashed once. A directory weight
(ERNIE-ViL's params/) is hashed over its files like any stage input.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hm_shared.errors import HmDataError, MissingWeightsError
from hm_shared.io import atomic_write_json
from orchestrator.cache import HashCache
from orchestrator.recipes import Weight

LOCK_NAME = "weights.lock.json"
FORMAT_VERSION = 1


def size_of(path: Path) -> int:
    """Bytes of a file, or of every file below a directory."""
    if path.is_file():
        return path.stat().st_size
    return sum((Path(d) / f).stat().st_size for d, _, files in os.walk(path) for f in files)


def read_lock(weights_dir: Path) -> dict[str, dict[str, object]]:
    """weight file → {"sha256", "size"}; empty when there is no lock yet."""
    path = weights_dir / LOCK_NAME
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        files = raw["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise HmDataError(
            f"not a weights lock ({exc}); expected {{'format_version': 1, 'files': {{…}}}}. "
            "Remove it and run `orchestrator weights fetch` to write it again",
            path,
        ) from None
    return files


def pinned_problem(weight: Weight, digest: str) -> str | None:
    if weight.sha256 is None or digest.startswith(weight.sha256):
        return None
    return f"sha256 {digest[:16]}… does not match the recipe's pinned {weight.sha256}"


def problems(weights_dir: Path, weights: list[Weight], hashes: HashCache) -> list[str]:
    """One line per present weight that differs from the lock or its pinned checksum."""
    lock = read_lock(weights_dir)
    found = []
    for weight in weights:
        path = weights_dir / weight.file
        if not path.exists():
            continue  # missing files are reported on their own, with their sources
        entry = lock.get(weight.file)
        size = size_of(path)
        if entry is not None and size != entry.get("size"):
            found.append(f"{path}: {size} bytes, {entry.get('size')} when it was fetched")
            continue
        digest = hashes.path_hash(path)
        pinned = pinned_problem(weight, digest)
        if pinned is not None:
            found.append(f"{path}: {pinned}")
        elif entry is not None and digest != entry.get("sha256"):
            found.append(f"{path}: content changed since it was fetched (same size)")
    return found


def changed_weights_error(weights_dir: Path, found: list[str], models: str) -> MissingWeightsError:
    return MissingWeightsError(
        f"{len(found)} pretrained file(s) differ from what was fetched:\n"
        + "\n".join(f"  {line}" for line in found)
        + f"\nremove them and run `orchestrator weights fetch --models {models}` to fetch them "
        f"again (a file you replaced on purpose: also remove its entry from {LOCK_NAME})",
        path=weights_dir,
    )


def record(weights_dir: Path, weights: list[Weight], hashes: HashCache) -> None:
    """Add every present weight of `weights` that the lock lacks (callers check the others)."""
    lock = read_lock(weights_dir)
    for weight in weights:
        path = weights_dir / weight.file
        if weight.file not in lock and path.exists():
            lock[weight.file] = {"sha256": hashes.path_hash(path), "size": size_of(path)}
    hashes.save()
    atomic_write_json(
        weights_dir / LOCK_NAME,
        {"format_version": FORMAT_VERSION, "files": dict(sorted(lock.items()))},
    )


__all__ = [
    "LOCK_NAME",
    "changed_weights_error",
    "pinned_problem",
    "problems",
    "read_lock",
    "record",
    "size_of",
]
