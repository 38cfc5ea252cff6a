"""Exact reading and writing of MMF's feature LMDB (`detectron.lmdb`, used by VisualBERT "V").

Layout: key `b"keys"` → pickled list of byte keys; each key → pickled dict
`{feature_path, features (N, 2048) float32, image_height, image_width, num_boxes, objects (N,),
cls_prob (N, C) or None, bbox (N, 4)}`. Values are unpickled with `restricted_loads`, so a
downloaded file cannot run code.

Mapping to `RegionFeatures` (what is kept):
- all N rows of `features` / `bbox` / `objects`, as vilio's V reader did (`feats[:100]`); MMF's
  `num_boxes` (boxes with non-zero confidence) is not kept, and we write `num_boxes = N`;
- `object_conf[i] = cls_prob[i, objects[i]]` (MMF's `objects` is the argmax of `cls_prob`); the
  rest of `cls_prob` is dropped. On export `cls_prob` is (N, num_classes) with that confidence at
  the object's column and zeros elsewhere (or None), so export → import is exact;
- attributes are not part of the layout: zeros on import, dropped on export.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import lmdb
import numpy as np

from hm_shared.errors import HmDataError
from hm_shared.features import (
    DatasetIds,
    FeatureStore,
    FeatureStoreWriter,
    ImportSummary,
    RegionFeatures,
    check_region_features,
)
from hm_shared.safe_pickle import restricted_loads

KEYS_KEY = b"keys"
_PICKLE_PROTOCOL = 4  # readable by the Python 3.6/3.7 that MMF and vilio ran on
_BATCH = 64  # images per write transaction


def _open_read(path: Path) -> lmdb.Environment:
    if not path.exists():
        raise HmDataError("feature LMDB not found", path)
    try:
        return lmdb.open(
            str(path), subdir=path.is_dir(), readonly=True, lock=False,
            readahead=False, meminit=False, max_readers=1,
        )  # fmt: skip
    except lmdb.Error as exc:
        raise HmDataError(f"not a readable LMDB ({exc})", path) from exc


def read_lmdb_keys(txn: lmdb.Transaction, path: Path) -> list[bytes]:
    raw = txn.get(KEYS_KEY)
    if raw is None:
        raise HmDataError("no b'keys' entry; expected MMF's feature LMDB layout", path)
    try:
        keys = restricted_loads(raw)
    except HmDataError as exc:
        raise type(exc)(f"key b'keys': {exc}", path) from exc
    if not isinstance(keys, list | tuple):
        raise HmDataError(f"key b'keys' holds {type(keys).__name__}; expected a list", path)
    out = []
    for key in keys:
        if isinstance(key, str):
            key = key.encode()
        if not isinstance(key, bytes) or key == KEYS_KEY:
            raise HmDataError(f"key b'keys' lists {key!r}; expected image-id byte strings", path)
        out.append(key)
    return out


def _int_value(value: Any, name: str, key: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise HmDataError(f"key {key!r}: {name} = {value!r}; expected an int", path)
    return int(value)


def _array(value: dict[str, Any], name: str, ndim: int, key: str, path: Path) -> np.ndarray:
    array = value.get(name)
    if not isinstance(array, np.ndarray) or array.ndim != ndim:
        got = array.shape if isinstance(array, np.ndarray) else type(array).__name__
        raise HmDataError(f"key {key!r}: {name} is {got}; expected a {ndim}-d numpy array", path)
    return array


INFO_FIELDS = frozenset({"features", "bbox", "image_height", "image_width"})


def info_problem(value: Any) -> str | None:
    """Why an unpickled value is not an MMF feature entry (no dict, info fields missing)."""
    if not isinstance(value, dict):
        return f" holds {type(value).__name__}; expected a dict"
    missing = sorted(INFO_FIELDS - set(value))
    return f": missing {missing}; expected MMF's info fields" if missing else None


def decode_value(
    value: Any, key: str, path: Path, feature_dim: int = 2048, image_id: str | None = None
) -> RegionFeatures:
    """The `RegionFeatures` of one unpickled LMDB value; `image_id` defaults to the key."""
    problem = info_problem(value)
    if problem is not None:
        raise HmDataError(f"key {key!r}{problem}", path)
    features = _array(value, "features", 2, key, path)
    n = features.shape[0]
    bbox = _array(value, "bbox", 2, key, path)
    objects = value.get("objects")
    objects = np.zeros(n, np.int64) if objects is None else _array(value, "objects", 1, key, path)
    if bbox.shape[0] != n or objects.shape[0] != n:
        raise HmDataError(
            f"key {key!r}: features has {n} rows, bbox {bbox.shape[0]}, objects "
            f"{objects.shape[0]}; expected the same number",
            path,
        )
    cls_prob = value.get("cls_prob")
    if cls_prob is None:
        conf = np.zeros(n, np.float32)
    elif isinstance(cls_prob, np.ndarray) and cls_prob.ndim == 2 and cls_prob.shape[0] == n:
        if n and (objects.min() < 0 or objects.max() >= cls_prob.shape[1]):
            raise HmDataError(
                f"key {key!r}: objects reach {objects.max()} but cls_prob has "
                f"{cls_prob.shape[1]} columns",
                path,
            )
        conf = cls_prob[np.arange(n), objects]
    elif isinstance(cls_prob, np.ndarray) and cls_prob.shape == (n,):
        conf = cls_prob
    else:
        got = cls_prob.shape if isinstance(cls_prob, np.ndarray) else type(cls_prob).__name__
        raise HmDataError(f"key {key!r}: cls_prob is {got}; expected ({n}, classes)", path)
    item = RegionFeatures(
        image_id=key if image_id is None else image_id,
        image_h=_int_value(value["image_height"], "image_height", key, path),
        image_w=_int_value(value["image_width"], "image_width", key, path),
        boxes=bbox,
        features=features,
        object_ids=objects,
        object_conf=conf,
        attr_ids=np.zeros(n, np.int64),
        attr_conf=np.zeros(n, np.float32),
    )
    return check_region_features(item, feature_dim, f"{path} key {key!r}")


def iter_lmdb(path: Path) -> Iterator[tuple[str, Any]]:
    """(key, unpickled value) for every key listed under `b"keys"`, one value in memory."""
    path = Path(path)
    env = _open_read(path)
    try:
        with env.begin(write=False, buffers=False) as txn:
            for raw_key in read_lmdb_keys(txn, path):
                key = raw_key.decode("utf-8", errors="replace")
                data = txn.get(raw_key)
                if data is None:
                    raise HmDataError(f"key {key!r} is listed under b'keys' but absent", path)
                try:
                    yield key, restricted_loads(data)
                except HmDataError as exc:
                    raise type(exc)(f"key {key!r}: {exc}", path) from exc
    finally:
        env.close()


def read_lmdb(path: Path, feature_dim: int = 2048) -> Iterator[RegionFeatures]:
    """Stream the images of an MMF feature LMDB; ids are the keys as written."""
    for key, value in iter_lmdb(path):
        yield decode_value(value, key, Path(path), feature_dim)


def encode_value(
    item: RegionFeatures, num_classes: int | None = 1600, source: Path | str | None = None
) -> dict[str, Any]:
    """The MMF value dict of one image (`cls_prob` None when `num_classes` is None)."""
    n = item.num_boxes
    objects = np.array(item.object_ids, dtype=np.int64)
    cls_prob = None
    if num_classes is not None:
        if n and objects.max() >= num_classes:
            raise HmDataError(
                f"image {item.image_id!r}: object id {objects.max()} >= num_classes "
                f"{num_classes}; export with a larger --num-classes",
                source,
            )
        cls_prob = np.zeros((n, num_classes), np.float32)
        cls_prob[np.arange(n), objects] = item.object_conf
    return {
        "feature_path": item.image_id,
        "features": np.array(item.features, dtype=np.float32),
        "image_height": int(item.image_h),
        "image_width": int(item.image_w),
        "num_boxes": n,
        "objects": objects,
        "cls_prob": cls_prob,
        "bbox": np.array(item.boxes, dtype=np.float32),
    }


def put_batch(env: lmdb.Environment, batch: list[tuple[bytes, bytes]]) -> None:
    """Write (key, value) pairs in one transaction, growing the map when it is full."""
    while True:
        try:
            with env.begin(write=True) as txn:
                for key, data in batch:
                    txn.put(key, data)
            return
        except lmdb.MapFullError:  # the transaction was aborted: grow the map and redo it
            env.set_mapsize(env.info()["map_size"] * 2)


def write_lmdb(items: Iterable[RegionFeatures], path: Path, num_classes: int | None = 1600) -> int:
    """Write items as an MMF feature LMDB directory at `path` (built beside it, then renamed)."""
    path = Path(path)
    if path.exists():
        raise HmDataError("already exists; remove it or choose another output path", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    keys: list[bytes] = []
    try:
        env = lmdb.open(str(tmp), map_size=1 << 30, subdir=True)
        try:
            batch: list[tuple[bytes, bytes]] = []
            for item in items:
                item = check_region_features(item, None, path)
                key = item.image_id.encode()
                value = encode_value(item, num_classes, path)
                batch.append((key, pickle.dumps(value, protocol=_PICKLE_PROTOCOL)))
                keys.append(key)
                if len(batch) == _BATCH:
                    put_batch(env, batch)
                    batch = []
            batch.append((KEYS_KEY, pickle.dumps(keys, protocol=_PICKLE_PROTOCOL)))
            put_batch(env, batch)
            env.sync(True)
        finally:
            env.close()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return len(keys)


def export_lmdb(store: Path, path: Path, num_classes: int | None = 1600) -> int:
    """Every image of the store at `store`, in store order, as an MMF LMDB at `path`."""
    reader = FeatureStore(store)
    return write_lmdb((reader[image_id] for image_id in reader.ids()), path, num_classes)


def import_lmdb(
    path: Path,
    store: Path,
    feature_dim: int = 2048,
    dataset_ids: DatasetIds | None = None,
) -> ImportSummary:
    """Append the images of an MMF LMDB to the store at `store` (created or resumed).

    Keys are kept as they are, or mapped to the dataset's stems ("8291" → "08291") when
    `dataset_ids` is given; keys naming no dataset image, and entries that are not MMF feature
    dicts (no info fields), are skipped and listed."""
    path = Path(path)
    summary = ImportSummary(source=str(path))
    seen: dict[str, str] = {}
    with FeatureStoreWriter(store, feature_dim) as writer:
        for key, value in iter_lmdb(path):
            problem = info_problem(value)
            if problem is not None:
                summary.incomplete += 1
                summary.problems.append(f"{path}: key {key!r}{problem}; skipped")
                continue
            image_id = key if dataset_ids is None else dataset_ids.resolve(key)
            if image_id is None:
                summary.unknown_ids += 1
                summary.problems.append(f"{path}: key {key!r} is not in the dataset")
                continue
            if image_id in seen:
                summary.duplicates += 1
                summary.problems.append(
                    f"{path}: key {key!r} is image {image_id!r} again (key {seen[image_id]!r}); "
                    "kept the first"
                )
                continue
            seen[image_id] = key
            if image_id in writer:
                summary.already_in_store += 1
                continue
            writer.add(decode_value(value, key, path, feature_dim, image_id))
            summary.added += 1
    return summary


__all__ = [
    "INFO_FIELDS",
    "KEYS_KEY",
    "decode_value",
    "encode_value",
    "export_lmdb",
    "import_lmdb",
    "info_problem",
    "iter_lmdb",
    "put_batch",
    "read_lmdb",
    "write_lmdb",
]
