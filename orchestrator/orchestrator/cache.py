"""Cache keys (docs/architecture.md §4): sha256 of canonical JSON over what determines a stage.

Key parts: kind, env, params, engine, run, profile, input content hashes, the env's lock-file
hash and the code version (sha256 of the .py sources of hm_shared + hm_<env>). Paths, the
runtime, the device and the run-facts inputs (the report's timings) stay out, so local/docker
and CPU/GPU share cache entries.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hm_shared.errors import HmDataError
from hm_shared.io import atomic_write_json, sha256_file, sha256_json
from hm_shared.spec import SPEC_FILE, STATS_FILE
from orchestrator.errors import RecipeError
from orchestrator.records import Record
from orchestrator.slurm import EXIT_FILE, SCRIPT_FILE
from orchestrator.stages import InputRef, StageDef

MISSING = "missing"  # the hash of an external input that does not exist
# spec.json holds absolute paths that differ between runtimes; stats.json and a SLURM job's
# script and exit code how the output was made (a resumed extraction counts more detector
# passes), not what it holds
UNHASHED = frozenset({SPEC_FILE, STATS_FILE, SCRIPT_FILE, EXIT_FILE})


def key_parts(
    stage: StageDef,
    input_hashes: Mapping[str, str],
    env_locks: Mapping[str, str],
    code: Mapping[str, str],
) -> dict[str, Any]:
    return {
        "kind": stage.kind,
        "env": stage.env,
        "params": stage.params,
        "engine": stage.engine,
        "run": stage.run.model_dump(mode="json") if stage.run else None,
        "profile": stage.profile,
        "inputs": dict(sorted(input_hashes.items())),
        "env_lock": env_locks[stage.env],
        "code": code[stage.env],
    }


def stage_key(parts: Mapping[str, Any]) -> str:
    return sha256_json(parts)


def lock_file(repo: Path, env: str) -> Path:
    """The lock file that pins an environment; host stages run in the orchestrator's venv."""
    if env == "host":
        return repo / "orchestrator" / "requirements.lock"
    return repo / "containers" / env / "requirements.lock"


def env_lock_hash(repo: Path, env: str) -> str:
    path = lock_file(repo, env)
    if not path.is_file():
        raise RecipeError(f"environment {env!r} has no lock file {path}")
    return sha256_file(path)


def source_dirs(repo: Path, env: str) -> list[Path]:
    dirs = [repo / "shared" / "hm_shared"]
    if env != "host":
        dirs.append(repo / "containers" / env / f"hm_{env}")
    return dirs


def code_version(repo: Path, env: str) -> str:
    """sha256 over the .py sources of hm_shared (+ hm_<env>), sorted by path relative to repo."""
    entries = []
    for folder in source_dirs(repo, env):
        for path in sorted(folder.rglob("*.py")):
            if "__pycache__" not in path.parts:
                entries.append((path.relative_to(repo).as_posix(), sha256_file(path)))
    return sha256_json(entries)


def _output_files(directory: Path) -> list[Path]:
    """The files of a promoted output that count: temp files and `UNHASHED` left out."""
    return [
        p
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name not in UNHASHED and not p.name.endswith(".tmp")
    ]


def output_hash(directory: Path) -> str:
    """Content hash of a promoted output: relative paths + file hashes."""
    entries = [
        (p.relative_to(directory).as_posix(), sha256_file(p)) for p in _output_files(directory)
    ]
    return sha256_json(entries)


def output_files(directory: Path) -> dict[str, int]:
    """Name → size of each file of an output: what its record keeps to notice, by stat alone,
    a file deleted, truncated, replaced by one of another size or added."""
    return {p.relative_to(directory).as_posix(): p.stat().st_size for p in _output_files(directory)}


def output_problem(directory: Path, recorded: Mapping[str, int] | None) -> str | None:
    """Why a done stage's output is not what its record says (None: it is). A record from
    before file lists were kept (`recorded` None) can only check that the folder exists."""
    if not directory.is_dir():
        return "output missing"
    if recorded is None:
        return None
    found = output_files(directory)
    changes = [f"{name} missing" for name in sorted(set(recorded) - set(found))]
    changes += [
        f"{name} {recorded[name]}→{found[name]} bytes"
        for name in sorted(set(recorded) & set(found))
        if recorded[name] != found[name]
    ]
    changes += [f"{name} added" for name in sorted(set(found) - set(recorded))]
    if not changes:
        return None
    more = f" (+{len(changes) - 3} more)" if len(changes) > 3 else ""
    return "output changed: " + ", ".join(changes[:3]) + more


def output_problems(
    root: Path, stages: list[StageDef], records: Mapping[str, Record | None]
) -> dict[str, str]:
    """Stage id → what is wrong with its output on disk, for the stages where something is."""
    problems = {}
    for stage in stages:
        record = records.get(stage.id)
        problem = output_problem(root / stage.output, record.output_files if record else None)
        if problem:
            problems[stage.id] = problem
    return problems


def _unreadable(exc: OSError) -> None:
    """os.walk skips a folder it cannot list; hashing it as empty would hide it."""
    raise HmDataError(
        f"cannot list this folder ({exc.strerror}); expected a folder readable by the user "
        f"running the orchestrator (uid {os.getuid()})",
        exc.filename,
    )


def _refuse_loop(folder: Path, top: Path, idents: dict[str, tuple[int, int]]) -> None:
    """A followed link that leads back to one of its own ancestors would be walked forever."""
    st = folder.stat()
    ident = (st.st_dev, st.st_ino)
    idents[str(folder)] = ident
    for parent in folder.relative_to(top).parents:
        if idents.get(str(top / parent)) == ident:
            raise HmDataError(
                f"a link loop: this folder is its own ancestor {top / parent}; expected "
                "links under the dataset to lead outside it or to other folders",
                folder,
            )


class HashCache:
    """Content hashes of external files (dataset, weights), reused while (size, mtime, inode)
    are unchanged; stored in state/hashes.json."""

    def __init__(self, root: Path, store: Path):
        self.root = root
        self.store = store
        self._entries: dict[str, dict[str, Any]] = {}
        self._dirty = False
        if store.is_file():
            try:
                self._entries = json.loads(store.read_text(encoding="utf-8"))
            except ValueError:
                self._entries = {}  # a torn cache only costs re-hashing

    def file_hash(self, path: Path) -> str:
        try:
            st = path.stat()
        except OSError as exc:  # a dangling link, a file that vanished, no permission
            raise HmDataError(
                f"cannot read it ({exc.strerror}); expected a readable file", path
            ) from None
        if not stat.S_ISREG(st.st_mode):  # reading a FIFO would block forever
            raise HmDataError(
                "not a regular file (a FIFO, socket or device); expected only files and "
                "folders here: remove it",
                path,
            )
        stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}
        # inputs outside the data dir (the memes of `orchestrator predict`) by absolute path
        inside = path.is_relative_to(self.root)
        rel = path.relative_to(self.root).as_posix() if inside else path.as_posix()
        entry = self._entries.get(rel)
        if entry and all(entry.get(k) == v for k, v in stamp.items()):
            return str(entry["sha256"])
        try:
            digest = sha256_file(path)
        except OSError as exc:
            raise HmDataError(
                f"cannot read it ({exc.strerror}); expected a file readable by the user running "
                f"the orchestrator (uid {os.getuid()})",
                path,
            ) from None
        self._entries[rel] = {**stamp, "sha256": digest}
        self._dirty = True
        return digest

    def path_hash(self, path: Path) -> str:
        """A file's hash, a directory's (relative paths + file hashes), or MISSING."""
        if path.is_file():
            return self.file_hash(path)
        if not path.is_dir():
            return MISSING
        entries = []
        idents: dict[str, tuple[int, int]] = {}
        # followlinks: a dataset whose img/ is a link to another disk is hashed by its images
        for dirpath, dirnames, filenames in os.walk(path, followlinks=True, onerror=_unreadable):
            _refuse_loop(Path(dirpath), path, idents)
            dirnames.sort()
            for name in sorted(filenames):
                file = Path(dirpath) / name
                entries.append((file.relative_to(path).as_posix(), self.file_hash(file)))
        return sha256_json(sorted(entries))

    def input_hash(self, ref: InputRef) -> str:
        base = self.root / ref.path
        if ref.files is not None:
            # a weight may be a file or a directory (ERNIE-ViL's params/)
            return sha256_json([(name, self.path_hash(base / name)) for name in ref.files])
        return self.path_hash(base)

    def save(self) -> None:
        if self._dirty:
            atomic_write_json(self.store, self._entries)
            self._dirty = False


def fingerprint_inputs(stages: list[StageDef], cache: HashCache) -> dict[str, str]:
    """Content hash of every external input of `stages`, keyed by InputRef.ident."""
    hashes: dict[str, str] = {}
    for stage in stages:
        for ref in stage.keyed_inputs.values():
            if ref.producer is None and ref.ident not in hashes:
                hashes[ref.ident] = cache.input_hash(ref)
    cache.save()
    return hashes
