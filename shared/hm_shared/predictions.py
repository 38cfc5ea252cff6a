"""Prediction files `id,proba,label`: read, write, and join by meme id (never by row order).

Upstream aligned model outputs by row position and lost the ids' leading zeros; here every join
goes through the id, and a mismatch names both files and a few of the ids that differ.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hm_shared.errors import HmDataError
from hm_shared.io import atomic_write_text

HEADER = ("id", "proba", "label")
_SHOWN_IDS = 5  # how many differing ids an error message lists


@dataclass(frozen=True, eq=False)
class Predictions:
    """Per-meme probabilities of hateful and hard labels, validated on construction.

    `ids` (str[n]) are meme ids (image file stems, leading zeros kept), `proba` (float64[n]) in
    [0, 1], `label` (int64[n]) in {0, 1}. `source` names where they came from, for error messages.

    >>> p = Predictions(("08291", "10423"), [0.9, 0.2], [1, 0], source="dev_seen.csv")
    >>> len(p), p.ids.tolist(), p.proba.tolist(), p.label.tolist()
    (2, ['08291', '10423'], [0.9, 0.2], [1, 0])
    """

    ids: np.ndarray
    proba: np.ndarray
    label: np.ndarray
    source: str = field(default="<memory>")

    def __post_init__(self) -> None:
        ids = np.asarray(self.ids)
        if ids.size == 0:
            ids = ids.astype(str)
        proba = np.asarray(self.proba, dtype=np.float64)
        label = np.asarray(self.label)
        where = self.source
        if ids.ndim != 1 or proba.ndim != 1 or label.ndim != 1:
            raise HmDataError(
                f"expected 1-d ids, proba and label, got shapes {ids.shape}, {proba.shape}, "
                f"{label.shape}",
                where,
            )
        if not len(ids) == len(proba) == len(label):
            raise HmDataError(
                f"expected as many ids, probas and labels, got {len(ids)}, {len(proba)}, "
                f"{len(label)}",
                where,
            )
        if ids.dtype.kind != "U":
            # Integer ids are how upstream lost the leading zeros: refuse them.
            raise HmDataError(f"expected ids as strings, got dtype {ids.dtype}", where)
        for i in np.flatnonzero(~np.isfinite(proba) | (proba < 0) | (proba > 1))[:1]:
            raise HmDataError(f"Expected proba in [0, 1], got {proba[i]} for id {ids[i]}", where)
        if label.size == 0:
            label = label.astype(np.int64)
        if label.dtype.kind not in "iub":
            raise HmDataError(f"expected integer labels 0 or 1, got dtype {label.dtype}", where)
        for i in np.flatnonzero(~np.isin(label, (0, 1)))[:1]:
            raise HmDataError(f"expected label 0 or 1, got {label[i]} for id {ids[i]}", where)
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            dups = uniq[counts > 1][:_SHOWN_IDS].tolist()
            raise HmDataError(f"duplicate ids {dups}; expected each meme id once", where)
        for arr in (ids, proba, label):
            arr.setflags(write=False)
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "proba", proba)
        object.__setattr__(self, "label", label.astype(np.int64))

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, order: np.ndarray) -> Predictions:
        """Rows reordered (or subset) by integer positions `order`.

        >>> Predictions(("a", "b"), [0.1, 0.7], [0, 1]).take(np.array([1, 0])).ids.tolist()
        ['b', 'a']
        """
        return Predictions(self.ids[order], self.proba[order], self.label[order], self.source)


def write_predictions(path: Path, preds: Predictions) -> None:
    """Write `id,proba,label` atomically; proba as the shortest repr that round-trips exactly.

    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = Path(tmp.name) / "dev_seen.csv"
    >>> write_predictions(path, Predictions(("08291",), [1 / 3], [0]))
    >>> path.read_text().splitlines()
    ['id,proba,label', '08291,0.3333333333333333,0']
    >>> tmp.cleanup()
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    for meme_id, proba, label in zip(preds.ids, preds.proba, preds.label, strict=True):
        writer.writerow((str(meme_id), repr(float(proba)), int(label)))
    atomic_write_text(Path(path), out.getvalue())


def read_predictions(path: Path) -> Predictions:
    """Read and validate a predictions CSV; every error names the file and line.

    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = Path(tmp.name) / "dev_seen.csv"
    >>> _ = path.write_text("id,proba,label\\n08291,0.75,1\\n")
    >>> read_predictions(path).ids.tolist()
    ['08291']
    >>> tmp.cleanup()
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise HmDataError(f"cannot read predictions: {exc}", path) from exc
    rows = csv.reader(io.StringIO(text, newline=""))
    header = next(rows, None)
    if header is None or tuple(h.strip() for h in header) != HEADER:
        raise HmDataError(f"expected header {','.join(HEADER)}, got {header}", path, 1)
    ids: list[str] = []
    probas: list[float] = []
    labels: list[int] = []
    first_line: dict[str, int] = {}
    for row in rows:
        line = rows.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line, e.g. a trailing newline
        if len(row) != len(HEADER):
            raise HmDataError(
                f"expected 3 fields id,proba,label, got {len(row)}: {row}", path, line
            )
        meme_id, proba_text, label_text = (cell.strip() for cell in row)
        if not meme_id:
            raise HmDataError("empty id; expected a meme id such as 08291", path, line)
        try:
            proba = float(proba_text)
        except ValueError:
            raise HmDataError(
                f"expected a number for proba, got {proba_text!r} for id {meme_id}", path, line
            ) from None
        if not (math.isfinite(proba) and 0.0 <= proba <= 1.0):
            raise HmDataError(
                f"Expected proba in [0, 1], got {proba_text} for id {meme_id}", path, line
            )
        if label_text not in ("0", "1"):
            raise HmDataError(
                f"expected label 0 or 1, got {label_text!r} for id {meme_id}", path, line
            )
        if meme_id in first_line:
            raise HmDataError(
                f"duplicate id {meme_id} (first on line {first_line[meme_id]})", path, line
            )
        first_line[meme_id] = line
        ids.append(meme_id)
        probas.append(proba)
        labels.append(int(label_text))
    if not ids:
        raise HmDataError("header but no rows; expected one row per meme", path)
    return Predictions(np.array(ids, dtype=str), probas, labels, source=str(path))


def _id_mismatch(first: Predictions, other: Predictions) -> HmDataError:
    a, b = set(first.ids.tolist()), set(other.ids.tolist())
    only_a, only_b = sorted(a - b), sorted(b - a)
    parts = []
    if only_a:
        parts.append(f"{len(only_a)} only in {first.source} ({', '.join(only_a[:_SHOWN_IDS])})")
    if only_b:
        parts.append(f"{len(only_b)} only in {other.source} ({', '.join(only_b[:_SHOWN_IDS])})")
    return HmDataError(
        f"ids differ between {first.source} and {other.source}: {'; '.join(parts)}; "
        "expected predictions for the same memes"
    )


def align(a: Predictions, b: Predictions) -> tuple[Predictions, Predictions]:
    """`b` reordered into `a`'s id order; an error naming both sources when the id sets differ.

    >>> a = Predictions(("1", "2"), [0.1, 0.2], [0, 0], source="a.csv")
    >>> b = Predictions(("2", "1"), [0.8, 0.9], [1, 1], source="b.csv")
    >>> align(a, b)[1].proba.tolist()
    [0.9, 0.8]
    """
    if len(a) != len(b) or set(a.ids.tolist()) != set(b.ids.tolist()):
        raise _id_mismatch(a, b)
    order = np.argsort(b.ids, kind="stable")
    pos = np.searchsorted(b.ids[order], a.ids)
    return a, b.take(order[pos])


def join_by_id(preds: Sequence[Predictions]) -> tuple[np.ndarray, np.ndarray]:
    """Ids (str[n], the first input's order) and probas (float64[n, k]), one column per input.

    >>> a = Predictions(("1", "2"), [0.1, 0.2], [0, 0])
    >>> b = Predictions(("2", "1"), [0.8, 0.9], [1, 1])
    >>> ids, matrix = join_by_id([a, b])
    >>> ids.tolist(), matrix.tolist()
    (['1', '2'], [[0.1, 0.9], [0.2, 0.8]])
    """
    if not preds:
        raise ValueError("join_by_id needs at least one Predictions")
    first = preds[0]
    columns = [first.proba] + [align(first, other)[1].proba for other in preds[1:]]
    return first.ids, np.stack(columns, axis=1)
