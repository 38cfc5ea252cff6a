"""Fetch the pretrained files the full profile needs into data/weights, from their recipe sources.

A weight is either a plain file at its `source` URL, or a `member` of the archive (tar, tar.gz,
zip) at that URL: a file or a directory (ERNIE-ViL's params/) matched by path suffix, so an
archive's top-level folder name does not matter. An archive is downloaded once for all the
weights it holds. Nothing half-written is ever left where a stage would read it: downloads go
to `.part` files and extraction into a `.part` directory, each renamed into place when complete.
Archive members are written by us under the target, never by the archive's own paths, so an
entry such as `../../etc/x` or a link cannot reach outside it.
"""

from __future__ import annotations

import http.client
import os
import shutil
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from hm_shared.errors import HmDataError, MissingWeightsError
from hm_shared.io import atomic_open, sha256_file
from orchestrator.recipes import Weight

Say = Callable[[str], None]
CHUNK = 1 << 20
ARCHIVES = (".tar.gz", ".tgz", ".tar", ".zip")
DOWNLOADS = ".downloads"  # under data/weights: archives while their members are extracted
_EXCLUSIVE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW


def present(path: Path) -> bool:
    """A weight file, or a weight directory (ERNIE-ViL's params/) with at least one file."""
    return path.is_file() or (path.is_dir() and any(p.is_file() for p in path.rglob("*")))


@dataclass
class FetchResult:
    fetched: list[Path] = field(default_factory=list)
    already_present: list[Path] = field(default_factory=list)
    by_hand: list[Weight] = field(default_factory=list)  # manual sources, still missing


def _clear_part(part: Path) -> None:
    """Remove a stale `.part` file or folder; a link is removed itself, never followed (a
    planted `x.part -> /elsewhere` must not make us write outside data/weights)."""
    if part.is_symlink() or part.is_file():
        part.unlink()
    elif part.is_dir():
        shutil.rmtree(part)


def download(
    url: str, target: Path, say: Say, timeout: float = 60.0, sha256: str | None = None
) -> Path:
    """Stream `url` into `target` (via `target.part`, renamed when the byte count is complete
    and, with `sha256` (a digest or its prefix), the content matches it)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
        transient=True,
    )  # drawn only on a terminal: rich disables it for pipes and CI logs
    _clear_part(part)
    try:
        with (
            urllib.request.urlopen(url, timeout=timeout) as response,
            # O_EXCL | O_NOFOLLOW: a link created at `part` after the clear is refused too
            os.fdopen(os.open(part, _EXCLUSIVE, 0o666), "wb") as out,
            bar,
        ):
            expected = response.headers.get("Content-Length")
            task = bar.add_task(target.name, total=int(expected) if expected else None)
            received = 0
            while chunk := response.read(CHUNK):
                out.write(chunk)
                received += len(chunk)
                bar.update(task, completed=received)
            out.flush()
            os.fsync(out.fileno())
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        code = f"HTTP {exc.code} " if isinstance(exc, urllib.error.HTTPError) else ""
        raise MissingWeightsError(f"could not download {url}: {code}{reason}", target) from None
    if expected is not None and received != int(expected):
        part.unlink(missing_ok=True)
        raise MissingWeightsError(
            f"download of {url} stopped after {received} of {expected} bytes; run the command "
            "again to retry",
            target,
        )
    digest = sha256_file(part) if sha256 else ""
    if not digest.startswith(sha256 or ""):
        part.unlink(missing_ok=True)
        raise MissingWeightsError(
            f"download of {url} has sha256 {digest}, the recipe pins {sha256}: not placed",
            target,
        )
    os.replace(part, target)
    say(f"downloaded {url} ({received / 1e6:.1f} MB)")
    return target


@dataclass(frozen=True)
class _Entry:
    path: PurePosixPath  # normalised: no leading "./", no trailing "/"
    kind: str  # "file", "dir" or "other" (links, devices)
    info: tarfile.TarInfo | zipfile.ZipInfo


@dataclass
class _Archive:
    """The entries of an open tar or zip file, and a way to read one regular file of it."""

    path: Path
    entries: list[_Entry]
    tar: tarfile.TarFile | None = None
    zip: zipfile.ZipFile | None = None

    @contextmanager
    def open(self, entry: _Entry) -> Iterator[IO[bytes]]:
        if self.zip is not None and isinstance(entry.info, zipfile.ZipInfo):
            with self.zip.open(entry.info) as handle:
                yield handle
            return
        handle = self.tar.extractfile(entry.info) if self.tar is not None else None
        if handle is None:
            raise HmDataError(f"archive entry {entry.path} is not a regular file", self.path)
        with handle:
            yield handle


@contextmanager
def _open_archive(path: Path) -> Iterator[_Archive]:
    try:
        if path.name.endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                kinds = [(i, "dir" if i.is_dir() else "file") for i in archive.infolist()]
                entries = [_Entry(_norm(i.filename), kind, i) for i, kind in kinds]
                yield _Archive(path, entries, zip=archive)
        else:
            with tarfile.open(path) as archive:
                entries = [_Entry(_norm(m.name), _tar_kind(m), m) for m in archive.getmembers()]
                yield _Archive(path, entries, tar=archive)
    except (tarfile.TarError, zipfile.BadZipFile) as exc:
        raise HmDataError(f"not a readable tar or zip archive: {exc}", path) from None


def _norm(name: str) -> PurePosixPath:
    return PurePosixPath(name.removeprefix("./").rstrip("/"))


def _tar_kind(member: tarfile.TarInfo) -> str:
    return "file" if member.isfile() else "dir" if member.isdir() else "other"


def _find_member(entries: list[_Entry], member: str, archive: Path) -> PurePosixPath:
    """The shortest archive path that is `member` or ends with `/member` (directories count
    whether or not the archive lists them as entries of their own)."""
    want = PurePosixPath(member).parts
    paths = {e.path for e in entries} | {p for e in entries for p in e.path.parents}
    found = sorted(
        (p for p in paths if p.parts and p.parts[-len(want) :] == want),
        key=lambda p: (len(p.parts), str(p)),
    )
    if not found:
        tops = sorted({e.path.parts[0] for e in entries if e.path.parts})[:8]
        raise HmDataError(f"archive holds no {member!r}; its top-level entries: {tops}", archive)
    return found[0]


def _safe_relative(path: PurePosixPath, root: PurePosixPath, archive: Path) -> PurePosixPath:
    rel = path.relative_to(root)
    if rel.is_absolute() or ".." in rel.parts:
        raise HmDataError(f"archive entry {path} points outside its folder; refused", archive)
    return rel


def extract_member(archive_path: Path, member: str, target: Path) -> None:
    """Write the file or directory `member` of the archive to `target`, atomically."""
    with _open_archive(archive_path) as archive:
        root = _find_member(archive.entries, member, archive_path)
        inside = [e for e in archive.entries if e.path == root or root in e.path.parents]
        files = [e for e in inside if e.kind == "file"]
        links = [e for e in inside if e.kind == "other"]
        if links:
            raise HmDataError(
                f"archive member {root} holds links or devices ({links[0].path}); refused",
                archive_path,
            )
        if len(files) == 1 and files[0].path == root:  # a single file
            with archive.open(files[0]) as src, atomic_open(target, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
            return
        if not files:
            raise HmDataError(f"archive member {root} holds no files", archive_path)
        names = {e.path for e in files}
        clash = next((p for e in files for p in e.path.parents if p in names), None)
        if clash is not None:  # it cannot be written as both
            raise HmDataError(
                f"archive member {root} holds {clash} both as a file and as a folder; refused",
                archive_path,
            )
        part = target.with_name(target.name + ".part")
        _clear_part(part)
        part.mkdir(parents=True)  # fresh: nothing below it is a link
        for entry in files:
            dest = part / _safe_relative(entry.path, root, archive_path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(entry) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
    if target.exists():
        shutil.rmtree(target)  # not `present` (no file in it): nothing to lose
    os.replace(part, target)


def fetch_weights(
    weights_dir: Path, weights: list[Weight], say: Say, timeout: float = 60.0
) -> FetchResult:
    """Download every weight of `weights` that is not present under `weights_dir`."""
    result = FetchResult()
    archives: dict[str, Path] = {}
    cache = weights_dir / DOWNLOADS
    if cache.is_symlink():  # ours to make: never follow one planted there
        cache.unlink()
    for weight in weights:
        target = weights_dir / weight.file
        if present(target):
            result.already_present.append(target)
            continue
        if weight.manual:
            result.by_hand.append(weight)
            continue
        try:
            if weight.member is None:
                download(weight.source, target, say, timeout, weight.sha256)
            else:
                if weight.source not in archives:
                    # the URL's path names the archive (a query, e.g. a SAS token, does not)
                    name = PurePosixPath(urllib.parse.urlsplit(weight.source).path).name
                    if not name.endswith(ARCHIVES):
                        raise HmDataError(
                            f"source {weight.source} of {weight.file} has a member but is not a "
                            f"{'/'.join(ARCHIVES)} archive",
                            target,
                        )
                    archives[weight.source] = download(weight.source, cache / name, say, timeout)
                extract_member(archives[weight.source], weight.member, target)
                say(f"unpacked {weight.member} → {target}")
        except HmDataError as exc:
            if weight.note:
                raise MissingWeightsError(f"{exc} (note: {weight.note})") from None
            raise
        result.fetched.append(target)
    shutil.rmtree(cache, ignore_errors=True)  # every member it held is in place
    return result


__all__ = ["FetchResult", "download", "extract_member", "fetch_weights", "present"]
