"""Region-feature store: one directory per variant, memory-mapped, append-only and resumable.

Layout of a store directory (all arrays raw little-endian, rows of all images concatenated):

| file              | content                                                   |
|-------------------|-----------------------------------------------------------|
| `store.json`      | `format_version`, `feature_dim`, `dtype` (written first)  |
| `features.f32`    | float32 (rows, feature_dim)                               |
| `boxes.f32`       | float32 (rows, 4): x1, y1, x2, y2 in original pixels      |
| `object_ids.i64`  | int64 (rows,)                                             |
| `object_conf.f32` | float32 (rows,)                                           |
| `attr_ids.i64`    | int64 (rows,)                                             |
| `attr_conf.f32`   | float32 (rows,)                                           |
| `index.npy`       | structured array: id, row, num_boxes, image_h, image_w    |
| `writer.lock`     | `flock`ed while a writer has the store open               |

The index is the commit point: data files are fsynced first, then the index is replaced
atomically, so bytes past the rows the index covers are an unfinished append. A reader ignores
them and a reopened writer truncates them away (upstream's TSV resume duplicated rows instead).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hm_shared.errors import HmDataError
from hm_shared.io import atomic_open, atomic_write_json

FORMAT_VERSION = 1
STORE_FILE = "store.json"
INDEX_FILE = "index.npy"
LOCK_FILE = "writer.lock"

# (attribute of RegionFeatures, file name, on-disk dtype, values per row; None = feature_dim)
_COLUMNS: tuple[tuple[str, str, str, int | None], ...] = (
    ("features", "features.f32", "<f4", None),
    ("boxes", "boxes.f32", "<f4", 4),
    ("object_ids", "object_ids.i64", "<i8", 1),
    ("object_conf", "object_conf.f32", "<f4", 1),
    ("attr_ids", "attr_ids.i64", "<i8", 1),
    ("attr_conf", "attr_conf.f32", "<f4", 1),
)
_INDEX_FIELDS = (("row", "<i8"), ("num_boxes", "<i8"), ("image_h", "<i8"), ("image_w", "<i8"))
# The lock fds of the writers this process holds. A forked child (a DataLoader worker of the
# extract stage) closes its copies at once: a flock belongs to the open file, which the child
# shares, so otherwise a SIGKILLed stage's store stayed locked until its last worker noticed
# the parent's death (up to 5 s) and the immediate rerun was refused.
_HELD_LOCKS: set[int] = set()


def _close_inherited_locks() -> None:
    for fd in _HELD_LOCKS:
        os.close(fd)  # the parent's copy keeps the lock
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)
_FORBIDDEN_ID_CHARS = set('\t\n\r"\x00/\\')


@dataclass(frozen=True)
class RegionFeatures:
    """One image's detected regions. Arrays from a `FeatureStore` are read-only memmap views."""

    image_id: str
    image_h: int
    image_w: int
    boxes: np.ndarray  # (N, 4) float32, x1, y1, x2, y2 in original-image pixels
    features: np.ndarray  # (N, D) float32
    object_ids: np.ndarray  # (N,) int64
    object_conf: np.ndarray  # (N,) float32
    attr_ids: np.ndarray  # (N,) int64, zeros for plain "vg" weights
    attr_conf: np.ndarray  # (N,) float32

    @property
    def num_boxes(self) -> int:
        return int(self.boxes.shape[0])


def _column_shape(n: int, width: int | None, feature_dim: int) -> tuple[int, ...]:
    if width is None:
        return (n, feature_dim)
    return (n, width) if width > 1 else (n,)


def check_region_features(
    item: RegionFeatures, feature_dim: int | None, source: Path | str
) -> RegionFeatures:
    """Validate shapes, dtypes and values; return the item with contiguous on-disk dtypes.

    Integer inputs become int64 and float inputs float32; any other dtype change is an error."""
    where = f"image {item.image_id!r}"
    if (
        not isinstance(item.image_id, str)
        or not item.image_id
        or (set(item.image_id) & _FORBIDDEN_ID_CHARS)
    ):
        raise HmDataError(
            f"{where}: expected a non-empty image id without tabs, newlines, quotes or slashes",
            source,
        )
    for name in ("image_h", "image_w"):
        value = getattr(item, name)
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
            raise HmDataError(f"{where}: {name} = {value!r}; expected a positive int", source)
    n = int(np.shape(item.boxes)[0]) if np.ndim(item.boxes) >= 1 else -1
    converted: dict[str, np.ndarray] = {}
    for name, _file, dtype, width in _COLUMNS:
        array = np.asarray(getattr(item, name))
        target = np.dtype(dtype)
        if array.dtype.kind not in ("iu" if target.kind == "i" else "f"):
            kind = "an integer" if target.kind == "i" else "a float"
            raise HmDataError(f"{where}: {name} has dtype {array.dtype}; expected {kind}", source)
        dim = (
            feature_dim if feature_dim is not None else (array.shape[1] if array.ndim == 2 else -1)
        )
        expected = _column_shape(n, width, dim)
        if array.shape != expected or n < 0:
            raise HmDataError(
                f"{where}: {name} has shape {array.shape}; expected {expected} "
                f"(N = {n} boxes, feature_dim = {feature_dim})",
                source,
            )
        array = np.ascontiguousarray(array, dtype=target)
        if target.kind == "f" and not np.isfinite(array).all():
            raise HmDataError(f"{where}: {name} holds NaN or inf values", source)
        converted[name] = array
    return RegionFeatures(
        image_id=item.image_id, image_h=int(item.image_h), image_w=int(item.image_w), **converted
    )


def _read_meta(root: Path) -> dict[str, Any]:
    path = root / STORE_FILE
    if not path.is_file():
        raise HmDataError(
            "not a feature store (no store.json); run the extract stage or import one with "
            "`python -m hm_shared.feature_io import-tsv|import-lmdb SRC DST`",
            root,
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        version, dim, dtype = meta["format_version"], meta["feature_dim"], meta["dtype"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HmDataError(
            f"unreadable store metadata ({exc}); expected JSON with format_version, "
            "feature_dim, dtype",
            path,
        ) from exc
    if version != FORMAT_VERSION:
        raise HmDataError(
            f"store format_version {version!r}, this code reads {FORMAT_VERSION}; "
            "re-run the extract stage (or re-import) to rebuild the store",
            path,
        )
    if dtype != "float32" or not isinstance(dim, int) or dim <= 0:
        raise HmDataError(
            f"dtype {dtype!r}, feature_dim {dim!r}; expected float32 and a positive int", path
        )
    return meta


def _read_index(root: Path) -> np.ndarray:
    path = root / INDEX_FILE
    try:
        index = np.load(path, allow_pickle=False)
    except FileNotFoundError as exc:
        raise HmDataError(
            "index missing: the store was never completed; delete the directory and "
            "re-run the extract stage",
            path,
        ) from exc
    except (OSError, ValueError, EOFError) as exc:
        raise HmDataError(f"corrupt index ({exc}); delete the store and re-extract", path) from exc
    names = index.dtype.names or ()
    if index.ndim != 1 or names[:1] != ("id",) or names[1:] != tuple(n for n, _ in _INDEX_FIELDS):
        raise HmDataError(
            f"corrupt index: dtype {index.dtype}, shape {index.shape}; expected a 1-d record "
            "array (id, row, num_boxes, image_h, image_w)",
            path,
        )
    nums = index["num_boxes"]
    starts = np.concatenate([[0], np.cumsum(nums)[:-1]]) if len(index) else nums
    if (nums < 0).any() or not np.array_equal(index["row"], starts):
        raise HmDataError("corrupt index: rows are not contiguous from 0", path)
    if (index["image_h"] <= 0).any() or (index["image_w"] <= 0).any():
        raise HmDataError("corrupt index: non-positive image size", path)
    ids = index["id"].tolist()
    if len(set(ids)) != len(ids):  # not np.unique: it imports numpy.ma, ~100 ms of a cold open
        raise HmDataError("corrupt index: duplicate image ids", path)
    return index


def _row_bytes(width: int | None, dtype: str, feature_dim: int) -> int:
    return (feature_dim if width is None else width) * np.dtype(dtype).itemsize


class FeatureStore:
    """Read-only view of a store; opening reads only `store.json` and the small index."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        meta = _read_meta(self.root)
        self.feature_dim: int = meta["feature_dim"]
        index = _read_index(self.root)
        self._ids: list[str] = index["id"].tolist()
        self._position = {image_id: i for i, image_id in enumerate(self._ids)}
        self._rows = index["row"]
        self._nums = index["num_boxes"]
        self._sizes = np.stack([index["image_h"], index["image_w"]], axis=1)  # (images, 2)
        total = int(self._nums.sum())
        self._columns: dict[str, np.ndarray] = {}
        for name, file, dtype, width in _COLUMNS:
            path = self.root / file
            need = total * _row_bytes(width, dtype, self.feature_dim)
            have = path.stat().st_size if path.is_file() else -1
            if have < need:
                raise HmDataError(
                    f"data file holds {max(have, 0)} bytes but the index covers {need}; "
                    "the store is damaged: delete it and re-run the extract stage",
                    path,
                )
            shape = _column_shape(total, width, self.feature_dim)
            if total == 0:
                self._columns[name] = np.zeros(shape, dtype=dtype)
            else:  # map only the bytes the index covers; a running writer may append more
                mapped = np.memmap(path, dtype=dtype, mode="r", shape=shape)
                self._columns[name] = mapped.view(np.ndarray)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._position

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def ids(self) -> list[str]:
        return list(self._ids)

    def __getitem__(self, image_id: str) -> RegionFeatures:
        position = self._position.get(image_id)
        if position is None:
            raise UnknownImageError(
                f"no features for image id {image_id!r} ({len(self)} images in the store); "
                "extract this image or use a store made from the same image folder",
                self.root,
            )
        start = int(self._rows[position])
        stop = start + int(self._nums[position])
        cols = {name: column[start:stop] for name, column in self._columns.items()}
        h, w = self._sizes[position]
        return RegionFeatures(image_id=image_id, image_h=int(h), image_w=int(w), **cols)

    # DataLoader workers started with "spawn" pickle the dataset: reopen instead of copying maps.
    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"])  # type: ignore[misc]


class UnknownImageError(HmDataError, KeyError):
    """An image id the store does not hold; a KeyError too, so Mapping-style code works."""

    def __str__(self) -> str:
        return Exception.__str__(self)


def _write_all(fd: int, array: np.ndarray) -> None:
    view = memoryview(array.reshape(-1).view(np.uint8))  # flat bytes, no copy (contiguous)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FeatureStoreWriter:
    """Append images to a store; reopening a partial store resumes where its index ends.

    Rows reach disk as `add` is called; they become part of the store at the next `flush`
    (explicit, automatic every `AUTO_FLUSH_IMAGES` images, and on `close`/context exit)."""

    AUTO_FLUSH_IMAGES = 256

    def __init__(self, root: Path, feature_dim: int = 2048) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._lock_fd)
            raise HmDataError(
                "another process is writing this feature store; wait for it to finish", self.root
            ) from exc
        _HELD_LOCKS.add(self._lock_fd)
        self._fds: dict[str, int] = {}
        try:
            self._open(feature_dim)
        except BaseException:
            self._release()
            raise

    def _open(self, feature_dim: int) -> None:
        if isinstance(feature_dim, bool) or not isinstance(feature_dim, int) or feature_dim <= 0:
            raise HmDataError(f"feature_dim {feature_dim!r}; expected a positive int", self.root)
        for stale in self.root.glob(f".{INDEX_FILE}.*.tmp"):  # an index write killed midway
            stale.unlink()
        if not (self.root / STORE_FILE).is_file():
            for _name, file, _dtype, _width in _COLUMNS:
                (self.root / file).write_bytes(b"")
            self._write_index(self._empty_index(1))
            atomic_write_json(
                self.root / STORE_FILE,
                {"format_version": FORMAT_VERSION, "feature_dim": feature_dim, "dtype": "float32"},
            )
            _fsync_dir(self.root)
        meta = _read_meta(self.root)
        if meta["feature_dim"] != feature_dim:
            raise HmDataError(
                f"store holds feature_dim {meta['feature_dim']}, writer asked for {feature_dim}; "
                "write to a new directory",
                self.root / STORE_FILE,
            )
        self.feature_dim = feature_dim
        index = _read_index(self.root)
        self._ids: list[str] = index["id"].tolist()
        self._id_set = set(self._ids)
        self._meta_rows: list[tuple[int, int, int, int]] = [
            tuple(int(v) for v in row[1:]) for row in index.tolist()
        ]
        self._total = int(index["num_boxes"].sum())
        self._flushed = len(self._ids)
        for name, file, dtype, width in _COLUMNS:
            path = self.root / file
            covered = self._total * _row_bytes(width, dtype, feature_dim)
            size = path.stat().st_size if path.is_file() else -1
            if size < covered:
                raise HmDataError(
                    f"data file holds {max(size, 0)} bytes but the index covers {covered}; "
                    "it cannot be resumed: delete the store and extract again",
                    path,
                )
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            self._fds[name] = fd
            if size > covered:  # an append the index never committed: drop it
                os.ftruncate(fd, covered)
                os.fsync(fd)

    @staticmethod
    def _empty_index(id_len: int) -> np.ndarray:
        return np.zeros(0, dtype=[("id", f"<U{id_len}"), *_INDEX_FIELDS])

    def _write_index(self, index: np.ndarray) -> None:
        with atomic_open(self.root / INDEX_FILE, "wb") as handle:
            np.save(handle, index, allow_pickle=False)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._id_set

    def __len__(self) -> int:
        return len(self._ids)

    def __enter__(self) -> FeatureStoreWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()  # rows added before an exception are complete: keep them

    def add(self, item: RegionFeatures) -> None:
        if not self._fds:
            raise HmDataError("writer is closed", self.root)
        item = check_region_features(item, self.feature_dim, self.root)
        if item.image_id in self._id_set:
            raise HmDataError(
                f"image id {item.image_id!r} is already in the store; check `id in writer` "
                "before extracting it",
                self.root,
            )
        starts = {name: os.lseek(fd, 0, os.SEEK_END) for name, fd in self._fds.items()}
        try:
            for name, fd in self._fds.items():
                _write_all(fd, getattr(item, name))
        except BaseException:
            for name, fd in self._fds.items():  # undo the half row so later offsets stay right
                os.ftruncate(fd, starts[name])
            raise
        self._ids.append(item.image_id)
        self._id_set.add(item.image_id)
        self._meta_rows.append((self._total, item.num_boxes, item.image_h, item.image_w))
        self._total += item.num_boxes
        if len(self._ids) - self._flushed >= self.AUTO_FLUSH_IMAGES:
            self.flush()

    def flush(self) -> None:
        if not self._fds or self._flushed == len(self._ids):
            return
        for fd in self._fds.values():
            os.fsync(fd)
        id_len = max((len(i) for i in self._ids), default=1)
        index = np.zeros(len(self._ids), dtype=self._empty_index(id_len).dtype)
        index["id"] = self._ids
        values = np.array(self._meta_rows, dtype=np.int64).reshape(-1, len(_INDEX_FIELDS))
        for column, (key, _dtype) in enumerate(_INDEX_FIELDS):
            index[key] = values[:, column]
        self._write_index(index)
        _fsync_dir(self.root)
        self._flushed = len(self._ids)

    def close(self) -> None:
        if not self._fds:
            return
        try:
            self.flush()
        finally:
            self._release()

    def _release(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
        if self._lock_fd >= 0:
            _HELD_LOCKS.discard(self._lock_fd)
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = -1


@dataclass
class ImportSummary:
    """What an import did; `problems` holds one line per skipped or repaired record."""

    source: str
    added: int = 0
    already_in_store: int = 0
    duplicates: int = 0
    unknown_ids: int = 0
    incomplete: int = 0  # entries without the fields of an image (skipped)
    problems: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = (
            f"{self.source}: {self.added} images added, {self.already_in_store} already in the "
            f"store, {self.duplicates} duplicates skipped, {self.unknown_ids} not in the dataset"
        )
        if self.incomplete:
            text += f", {self.incomplete} incomplete entries skipped"
        shown = self.problems[:20]
        more = len(self.problems) - len(shown)
        return "\n".join([text, *shown] + ([f"... and {more} more"] if more > 0 else []))


class DatasetIds:
    """Maps foreign image keys ("8291", "img/08291", 8291) to dataset stems ("08291")."""

    IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})

    def __init__(self, ids: Iterable[str], source: Path | str = "dataset ids") -> None:
        self.ids = frozenset(ids)
        self._by_int: dict[int, str] = {}
        for image_id in sorted(self.ids):
            if image_id.isdigit():
                other = self._by_int.setdefault(int(image_id), image_id)
                if other != image_id:
                    raise HmDataError(
                        f"ids {other!r} and {image_id!r} are the same number; cannot map "
                        "integer keys to one of them",
                        source,
                    )

    @classmethod
    def from_path(cls, path: Path) -> DatasetIds:
        """Ids from an image folder (file stems), a dataset .jsonl (stem of "img", else "id")
        or a text file with one id per line."""
        path = Path(path)
        if path.is_dir():
            ids = [p.stem for p in path.iterdir() if p.suffix.lower() in cls.IMAGE_SUFFIXES]
        elif path.suffix == ".jsonl":
            ids = []
            with open(path, encoding="utf-8") as handle:
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                        ids.append(Path(row["img"]).stem if "img" in row else str(row["id"]))
                    except (ValueError, KeyError, TypeError) as exc:
                        raise HmDataError(
                            f"expected a JSON object with img or id ({exc})", path, number
                        ) from exc
        elif path.is_file():
            ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            ids = [i for i in ids if i]
        else:
            raise HmDataError("id list not found; give the dataset's img/ folder", path)
        if not ids:
            raise HmDataError("no image ids found", path)
        return cls(ids, path)

    def resolve(self, key: str) -> str | None:
        """The dataset stem for `key`, or None when it names no image of the dataset."""
        stem = key.strip().rsplit("/", 1)[-1]
        if Path(stem).suffix.lower() in self.IMAGE_SUFFIXES:
            stem = Path(stem).stem
        if stem in self.ids:
            return stem
        if stem.isdigit():
            return self._by_int.get(int(stem))
        return None


__all__ = [
    "FORMAT_VERSION",
    "DatasetIds",
    "FeatureStore",
    "FeatureStoreWriter",
    "ImportSummary",
    "RegionFeatures",
    "UnknownImageError",
    "check_region_features",
]
