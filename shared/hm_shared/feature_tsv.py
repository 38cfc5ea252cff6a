"""Exact reading and writing of the upstream region-feature TSV (py-bottom-up-attention).

One image per line, tab-separated, no header, `\\r\\n` line ends (what `csv.DictWriter` wrote):

    img_id, img_h, img_w, objects_id, objects_conf, attrs_id, attrs_conf, num_boxes, boxes, features

Array fields are base64 of raw little-endian buffers: objects_id / attrs_id int64 (N,),
objects_conf / attrs_conf float32 (N,), boxes float32 (N, 4), features float32 (N, D).

About 1 row in 10k of upstream files has a buffer with N+1 entries: the detector's post-processing
dropped an empty box from the instances (boxes, classes, attributes) but not from the features.
Upstream readers reshaped that buffer with N+1 and kept it. We keep the `num_boxes` (N) rows of
every field, so all fields stay aligned, drop the surplus last entry, and report the line.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator
from pathlib import Path

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
from hm_shared.io import atomic_open

TSV_FIELDS = (
    "img_id", "img_h", "img_w", "objects_id", "objects_conf",
    "attrs_id", "attrs_conf", "num_boxes", "boxes", "features",
)  # fmt: skip
# (TSV field, RegionFeatures attribute, dtype, values per box; None = feature_dim)
_ARRAYS: tuple[tuple[str, str, str, int | None], ...] = (
    ("objects_id", "object_ids", "<i8", 1),
    ("objects_conf", "object_conf", "<f4", 1),
    ("attrs_id", "attr_ids", "<i8", 1),
    ("attrs_conf", "attr_conf", "<f4", 1),
    ("boxes", "boxes", "<f4", 4),
    ("features", "features", "<f4", None),
)
_COLUMN = {name: i for i, name in enumerate(TSV_FIELDS)}


def encode_row(item: RegionFeatures) -> bytes:
    """One TSV line (with its `\\r\\n`), byte-identical to what upstream's writer produced."""
    arrays = {
        tsv: base64.b64encode(np.ascontiguousarray(getattr(item, attr), dtype=dtype))
        for tsv, attr, dtype, _width in _ARRAYS
    }
    fields = [
        item.image_id.encode(), str(item.image_h).encode(), str(item.image_w).encode(),
        arrays["objects_id"], arrays["objects_conf"], arrays["attrs_id"], arrays["attrs_conf"],
        str(item.num_boxes).encode(), arrays["boxes"], arrays["features"],
    ]  # fmt: skip
    return b"\t".join(fields) + b"\r\n"


def _field_count_problem(fields: list[bytes]) -> str | None:
    if len(fields) == len(TSV_FIELDS):
        return None
    return (
        f"expected {len(TSV_FIELDS)} tab-separated fields ({', '.join(TSV_FIELDS)}), "
        f"got {len(fields)}"
    )


def raw_lines(path: Path) -> Iterator[tuple[int, list[bytes]]]:
    """(line number, tab-separated fields, however many) per non-blank line."""
    path = Path(path)
    if not path.is_file():
        raise HmDataError("feature TSV not found", path)
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield number, line.split(b"\t")


def split_lines(path: Path) -> Iterator[tuple[int, list[bytes]]]:
    """(line number, raw fields) per non-blank line; one line in memory at a time."""
    for number, fields in raw_lines(path):
        problem = _field_count_problem(fields)
        if problem is not None:
            raise HmDataError(problem, path, number)
        yield number, fields


def _decoded_size(b64: bytes) -> int | None:
    """Bytes a base64 field decodes to, from its length alone; None if no length fits."""
    if len(b64) % 4:
        return None
    return len(b64) // 4 * 3 - (2 if b64.endswith(b"==") else 1 if b64.endswith(b"=") else 0)


def incomplete(fields: list[bytes], feature_dim: int) -> str | None:
    """Why a line cannot be a whole row (field count, integers, buffer lengths), checked without
    decoding a buffer; None when it looks whole. A write cut off by a kill fails one of these."""
    problem = _field_count_problem(fields)
    if problem is not None:
        return problem
    try:
        n = int(fields[_COLUMN["num_boxes"]])
        int(fields[_COLUMN["img_h"]]), int(fields[_COLUMN["img_w"]])
    except ValueError:
        return "num_boxes, img_h or img_w is not an integer"
    for tsv, _attr, dtype, width in _ARRAYS:
        per_box = (feature_dim if width is None else width) * np.dtype(dtype).itemsize
        if _decoded_size(fields[_COLUMN[tsv]]) not in (n * per_box, (n + 1) * per_box):
            return f"{tsv} is not num_boxes {n} x {per_box} bytes of base64"
    return None


def _int_field(fields: list[bytes], name: str, path: Path, line: int) -> int:
    raw = fields[_COLUMN[name]]
    try:
        return int(raw)
    except ValueError:
        raise HmDataError(f"{name} = {raw[:40]!r}; expected an integer", path, line) from None


def decode_fields(
    fields: list[bytes], path: Path, line: int, feature_dim: int = 2048
) -> tuple[RegionFeatures, bool]:
    """Decode one split line; returns the item and whether a buffer had upstream's extra row."""
    try:
        image_id = fields[0].decode("utf-8")
    except UnicodeDecodeError:
        raise HmDataError(f"img_id {fields[0][:40]!r} is not UTF-8", path, line) from None
    n = _int_field(fields, "num_boxes", path, line)
    if n < 0:
        raise HmDataError(f"num_boxes = {n}; expected >= 0", path, line)
    arrays: dict[str, np.ndarray] = {}
    extra = False
    for tsv, attr, dtype, width in _ARRAYS:
        try:
            buffer = base64.b64decode(fields[_COLUMN[tsv]], validate=True)
        except binascii.Error as exc:
            message = f"image {image_id!r}: {tsv} is not base64 ({exc})"
            raise HmDataError(message, path, line) from None
        per_box = (feature_dim if width is None else width) * np.dtype(dtype).itemsize
        if len(buffer) == (n + 1) * per_box:
            extra = True
        elif len(buffer) != n * per_box:
            raise HmDataError(
                f"image {image_id!r}: {tsv} holds {len(buffer)} bytes; expected "
                f"{n * per_box} = num_boxes {n} x {per_box} (or one box more, upstream's rare "
                f"extra row){' — is feature_dim right?' if tsv == 'features' else ''}",
                path,
                line,
            )
        array = np.frombuffer(buffer, dtype=dtype, count=n * per_box // np.dtype(dtype).itemsize)
        shape = (n,) if width == 1 else (n, feature_dim if width is None else width)
        arrays[attr] = array.reshape(shape)
    item = RegionFeatures(
        image_id=image_id,
        image_h=_int_field(fields, "img_h", path, line),
        image_w=_int_field(fields, "img_w", path, line),
        **arrays,
    )
    return check_region_features(item, feature_dim, f"{path}:{line}"), extra


def read_tsv(path: Path, feature_dim: int = 2048) -> Iterator[RegionFeatures]:
    """Stream the images of an upstream TSV (rows with an extra entry are cut to num_boxes)."""
    for number, fields in split_lines(path):
        yield decode_fields(fields, Path(path), number, feature_dim)[0]


def write_tsv(items: Iterable[RegionFeatures], path: Path) -> int:
    """Write items as an upstream TSV, atomically; returns the number of rows."""
    count = 0
    with atomic_open(Path(path), "wb") as handle:
        for item in items:
            handle.write(encode_row(check_region_features(item, None, path)))
            count += 1
    return count


def export_tsv(store: Path, path: Path) -> int:
    """Every image of the store at `store`, in store order, as an upstream TSV at `path`."""
    reader = FeatureStore(store)
    return write_tsv((reader[image_id] for image_id in reader.ids()), path)


def _resolve(raw: bytes, dataset_ids: DatasetIds | None) -> tuple[str, str | None]:
    """(the id as written, the dataset id it names or None)."""
    raw_id = raw.decode("utf-8", errors="replace")
    return raw_id, raw_id if dataset_ids is None else dataset_ids.resolve(raw_id)


def _last_whole_rows(
    path: Path, feature_dim: int, dataset_ids: DatasetIds | None
) -> dict[str, int]:
    """Dataset id → the line of its last row that looks whole (first pass: no decoding)."""
    last: dict[str, int] = {}
    for number, fields in raw_lines(path):
        image_id = _resolve(fields[0], dataset_ids)[1]
        if image_id is not None and incomplete(fields, feature_dim) is None:
            last[image_id] = number
    return last


def import_tsv(
    path: Path,
    store: Path,
    feature_dim: int = 2048,
    dataset_ids: DatasetIds | None = None,
) -> ImportSummary:
    """Append the images of an upstream TSV to the store at `store` (created or resumed).

    Ids already in the store are skipped, so a killed import can simply be run again. An
    upstream extraction that was killed and resumed leaves a cut-off line followed by the same
    images written again: a line that is not a whole row is skipped (and reported) when a whole
    row of its image comes later, and of several rows for one image the last is kept, as
    upstream's readers do. Any other malformed line stops the import, naming file and line."""
    path = Path(path)
    summary = ImportSummary(source=str(path))
    last = _last_whole_rows(path, feature_dim, dataset_ids)
    with FeatureStoreWriter(store, feature_dim) as writer:
        for number, fields in raw_lines(path):
            raw_id, image_id = _resolve(fields[0], dataset_ids)
            problem = incomplete(fields, feature_dim)
            if problem is not None:
                if last.get(image_id or "", 0) > number:
                    summary.problems.append(
                        f"{path}:{number}: not a whole row ({problem}); skipped, image "
                        f"{image_id!r} has a whole row at line {last[image_id or '']}"
                    )
                    continue
                if _field_count_problem(fields) is None:
                    decode_fields(fields, path, number, feature_dim)  # the detailed message
                raise HmDataError(problem, path, number)
            if image_id is None:
                summary.unknown_ids += 1
                summary.problems.append(f"{path}:{number}: id {raw_id!r} is not in the dataset")
                continue
            if last.get(image_id, number) != number:
                summary.duplicates += 1
                summary.problems.append(
                    f"{path}:{number}: id {image_id!r} is written again at line "
                    f"{last[image_id]}; kept the last, as upstream's readers do"
                )
                continue
            if image_id in writer:
                summary.already_in_store += 1
                continue
            fields[0] = image_id.encode()
            item, extra = decode_fields(fields, path, number, feature_dim)  # raises on bad rows
            if extra:
                summary.problems.append(
                    f"{path}:{number}: id {image_id!r} has a buffer with num_boxes+1 entries; "
                    "kept the first num_boxes"
                )
            writer.add(item)
            summary.added += 1
    return summary


__all__ = [
    "TSV_FIELDS",
    "decode_fields",
    "encode_row",
    "export_tsv",
    "import_tsv",
    "incomplete",
    "raw_lines",
    "read_tsv",
    "split_lines",
    "write_tsv",
]
