"""The prepare stage: validate the released dataset and write the prepared splits.

Reads `hm_dir` (never writes there) and writes into `out_dir`, one prepared jsonl per split
(`{"id": "08291", "img": "img/08291.png", "text": "…", "label": 0|1|null}`, architecture.md §3):

- `dev_seen`, `dev_unseen`, `test_seen`, `test_unseen`: the released splits as validated.
- `train`: the clean train rows, then the dev_unseen rows whose id is not in dev_seen (upstream
  adds these ~140 memes to train).
- `traindev`: `train` then `dev_seen` (every labelled meme once): fit here, predict the tests.
- `pretrain`: every unique image/text pair of the five splits with `label` null, for the
  self-supervised pre-training stages. An id found in several splits is kept once (first split
  in `SPLITS` order); memes whose image hash and normalised text are equal are kept once (lowest
  id).
- `removed.jsonl`: each train row dropped by the clean-train rule, with its reason.
- `summary.json`: meme counts and label balance per split, removals, `topk`.
- `images.json`: `{"img/08291.png": sha256, …}` for every image the prepared splits name. The
  stages that read images from `hm` (extract, B) are keyed by this output, so they rerun when
  an image they read changes, and only then.

Clean-train rule. Train rows are grouped by (`imagehash.phash` of the image, text lower-cased
with runs of whitespace collapsed). A group of more than one row is a set of duplicates: when
all its labels agree the row with the lowest id is kept and the others are removed as
`duplicate`; when the labels disagree every row of the group is removed as `ambiguous`, since
the same meme cannot be both hateful and not. (Upstream removed about 50 duplicates with a
narrower rule and hard-coded id lists; ours is one rule, documented, and reported row by row.)

`topk` keeps N rows of EVERY released split before the derived splits are built, chosen by the
SHA-256 of the id (deterministic, independent of row order) and stratified by label so a
labelled split keeps both classes when it has them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import imagehash
from PIL import Image

from hm_shared.dataset import SPLITS, Meme, load_dataset, write_prepared
from hm_shared.errors import HmDataError, SpecError
from hm_shared.io import atomic_write_json, atomic_write_text, sha256_file
from hm_shared.spec import StageSpec

SUMMARY_FORMAT_VERSION = 1
PREPARED_SPLITS = (*SPLITS, "traindev", "pretrain")  # the jsonl files the stage writes


def normalize_text(text: str) -> str:
    """Lower case, whitespace runs collapsed to one space, ends stripped.

    >>> normalize_text("  Look  at\\tTHIS ")
    'look at this'
    """
    return " ".join(text.lower().split())


def id_rank(meme_id: str) -> str:
    """Stable pseudo-random rank of an id: the hex SHA-256 of its UTF-8 bytes.

    >>> id_rank("08291")[:12]
    '0e36425de81c'
    """
    return hashlib.sha256(meme_id.encode("utf-8")).hexdigest()


def _id_order(meme_id: str) -> tuple[int, int, str]:
    # Numeric order for numeric ids ("9999" < "10000"), text order after them otherwise.
    return (0, int(meme_id), meme_id) if meme_id.isdigit() else (1, 0, meme_id)


def _allocate(counts: Mapping[Any, int], k: int) -> dict[Any, int]:
    """Rows per stratum for `k` rows: proportional to `counts`, at least one per stratum.

    >>> _allocate({0: 90, 1: 10}, 10)
    {0: 9, 1: 1}
    >>> _allocate({0: 98, 1: 2}, 4)
    {0: 3, 1: 1}
    """
    keys = list(counts)
    total = sum(counts.values())
    ideal = {s: k * counts[s] / total for s in keys}
    quota = {s: min(counts[s], max(1, math.floor(ideal[s]))) for s in keys}
    # Largest remainder up, smallest remainder down (never below one); ties: first stratum.
    while sum(quota.values()) < k:
        grow = [s for s in keys if quota[s] < counts[s]]
        quota[max(grow, key=lambda s: (ideal[s] - quota[s], -keys.index(s)))] += 1
    while sum(quota.values()) > k:
        shrink = [s for s in keys if quota[s] > 1]
        quota[max(shrink, key=lambda s: (quota[s] - ideal[s], -keys.index(s)))] -= 1
    return quota


def subset_topk(memes: Sequence[Meme], topk: int) -> list[Meme]:
    """`topk` memes chosen by `id_rank`, stratified by label, kept in their original order.

    >>> memes = [Meme(f"{i:05d}", f"img/{i:05d}.png", "t", int(i < 3)) for i in range(20)]
    >>> sorted({m.label for m in subset_topk(memes, 4)})
    [0, 1]
    """
    if len(memes) <= topk:
        return list(memes)
    strata: dict[int | None, list[Meme]] = {}
    for meme in memes:
        strata.setdefault(meme.label, []).append(meme)
    if topk < len(strata):
        chosen = sorted(memes, key=lambda m: id_rank(m.id))[:topk]
    else:
        quota = _allocate({s: len(g) for s, g in strata.items()}, topk)
        chosen = [
            m for s, g in strata.items() for m in sorted(g, key=lambda m: id_rank(m.id))[: quota[s]]
        ]
    keep = {m.id for m in chosen}
    return [m for m in memes if m.id in keep]


def image_hash(hm_dir: Path, meme: Meme) -> str:
    """`imagehash.phash` of the meme's image as a hex string."""
    path = Path(hm_dir) / meme.img
    try:
        with Image.open(path) as image:
            return str(imagehash.phash(image))
    except (OSError, SyntaxError, ValueError) as exc:
        raise HmDataError(f"cannot hash the image of meme {meme.id}: {exc}", path) from exc


def clean_train(
    memes: Sequence[Meme], hash_of: Callable[[Meme], str]
) -> tuple[list[Meme], list[dict[str, Any]]]:
    """Apply the clean-train rule (module docstring): kept memes in order, and removed rows.

    >>> a, b, c = (Meme(i, f"img/{i}.png", "Hi  there", 0) for i in ("00003", "00001", "00002"))
    >>> kept, removed = clean_train([a, b, c], lambda m: "same")
    >>> [m.id for m in kept], [(r["id"], r["reason"], r["kept"]) for r in removed]
    (['00001'], [('00003', 'duplicate', '00001'), ('00002', 'duplicate', '00001')])
    """
    groups: dict[tuple[str, str], list[Meme]] = {}
    for meme in memes:
        groups.setdefault((hash_of(meme), normalize_text(meme.text)), []).append(meme)
    reasons: dict[str, dict[str, Any]] = {}
    for group in groups.values():
        if len(group) == 1:
            continue
        ids = sorted((m.id for m in group), key=_id_order)
        if len({m.label for m in group}) == 1:
            for meme_id in ids[1:]:
                reasons[meme_id] = {"reason": "duplicate", "kept": ids[0], "group": ids}
        else:
            for meme_id in ids:
                reasons[meme_id] = {"reason": "ambiguous", "kept": None, "group": ids}
    kept = [m for m in memes if m.id not in reasons]
    removed = [m.as_row() | reasons[m.id] for m in memes if m.id in reasons]
    return kept, removed


def _line_of(path: Path, meme_id: str) -> int | None:
    """Line of `path` holding meme `meme_id` (for error messages only, so re-reading is fine)."""
    lines = path.read_bytes().decode("utf-8-sig").split("\n")
    for number, line in enumerate(lines, start=1):
        try:
            img = json.loads(line).get("img")
        except (ValueError, AttributeError):
            continue
        if isinstance(img, str) and PurePosixPath(img).stem == meme_id:
            return number
    return None


def _concat(hm_dir: Path, parts: Iterable[tuple[str, Sequence[Meme]]]) -> list[Meme]:
    """Rows of several splits in order; an id in two of them is an error naming both files."""
    seen: dict[str, str] = {}
    out: list[Meme] = []
    for split, memes in parts:
        for meme in memes:
            if meme.id in seen:
                first = hm_dir / f"{seen[meme.id]}.jsonl"
                path = hm_dir / f"{split}.jsonl"
                raise HmDataError(
                    f"meme {meme.id} is also in {first} (line {_line_of(first, meme.id)}); "
                    f"expected the released splits to share no ids except dev_seen/dev_unseen",
                    path,
                    _line_of(path, meme.id),
                )
            seen[meme.id] = split
            out.append(meme)
    return out


def _unique_pairs(
    splits: Mapping[str, Sequence[Meme]], hash_of: Callable[[Meme], str]
) -> list[Meme]:
    by_id: dict[str, Meme] = {}
    for split in SPLITS:
        for meme in splits[split]:
            by_id.setdefault(meme.id, meme)
    best: dict[tuple[str, str], Meme] = {}
    for meme in by_id.values():
        key = (hash_of(meme), normalize_text(meme.text))
        if key not in best or _id_order(meme.id) < _id_order(best[key].id):
            best[key] = meme
    keep = {m.id for m in best.values()}
    return [Meme(m.id, m.img, m.text, None) for m in by_id.values() if m.id in keep]


def _balance(memes: Sequence[Meme]) -> dict[str, int]:
    labels = [m.label for m in memes]
    return {
        "memes": len(memes),
        "hateful": labels.count(1),
        "not_hateful": labels.count(0),
        "unlabelled": labels.count(None),
    }


def prepare(hm_dir: Path, out_dir: Path, topk: int | None = None) -> dict[str, Any]:
    """Validate the dataset in `hm_dir`, write the prepared splits into `out_dir`.

    Returns the summary also written to `out_dir/summary.json`.
    """
    hm_dir, out_dir = Path(hm_dir), Path(out_dir)
    if topk is not None and (isinstance(topk, bool) or not isinstance(topk, int) or topk < 1):
        raise ValueError(f"topk must be a positive integer or None, got {topk!r}")
    released = load_dataset(hm_dir)
    seen_ids = {m.id for m in released["dev_seen"]}
    # Only dev_unseen may repeat (dev_seen) ids; anything else would leak between fit and test.
    _concat(
        hm_dir,
        [
            (s, [m for m in released[s] if s != "dev_unseen" or m.id not in seen_ids])
            for s in SPLITS
        ],
    )
    splits = {s: subset_topk(m, topk) if topk else m for s, m in released.items()}
    hashes: dict[str, str] = {}

    def hash_of(meme: Meme) -> str:
        if meme.img not in hashes:
            hashes[meme.img] = image_hash(hm_dir, meme)
        return hashes[meme.img]

    kept, removed = clean_train(splits["train"], hash_of)
    # The full dev_seen, not its topk subset: a dev_seen meme must never end up in train.
    added = [m for m in splits["dev_unseen"] if m.id not in seen_ids]
    out = dict(splits)
    out["train"] = _concat(hm_dir, [("train", kept), ("dev_unseen", added)])
    out["traindev"] = _concat(
        hm_dir, [("train", kept), ("dev_unseen", added), ("dev_seen", splits["dev_seen"])]
    )
    out["pretrain"] = _unique_pairs(splits, hash_of)
    for name in PREPARED_SPLITS:
        write_prepared(out_dir / f"{name}.jsonl", out[name])
    used = sorted({m.img for name in PREPARED_SPLITS for m in out[name]})
    atomic_write_json(out_dir / "images.json", {img: sha256_file(hm_dir / img) for img in used})
    atomic_write_text(
        out_dir / "removed.jsonl",
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in removed),
    )
    reasons = [r["reason"] for r in removed]
    summary = {
        "format_version": SUMMARY_FORMAT_VERSION,
        "topk": topk,
        "released": {s: len(m) for s, m in released.items()},
        "splits": {name: _balance(memes) for name, memes in out.items()},
        "removed": {
            "duplicate": reasons.count("duplicate"),
            "ambiguous": reasons.count("ambiguous"),
        },
        "dev_unseen_added_to_train": len(added),
    }
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def prepare_stage(spec: StageSpec) -> None:
    """Stage entry: input `hm` (the dataset dir), param `topk` (int or null)."""
    extra_inputs = sorted(set(spec.inputs) - {"hm"})
    extra_params = sorted(set(spec.params) - {"topk"})
    if extra_inputs or extra_params:
        raise SpecError(
            f"stage {spec.stage}: unexpected inputs {extra_inputs} / params {extra_params}; "
            "a prepare stage takes input 'hm' and param 'topk'"
        )
    topk = spec.params.get("topk")
    if topk is not None and (isinstance(topk, bool) or not isinstance(topk, int) or topk < 1):
        raise SpecError(
            f"stage {spec.stage}: param topk must be a positive integer or null, got {topk!r}"
        )
    prepare(spec.path("hm"), spec.output_dir, topk)


__all__ = [
    "PREPARED_SPLITS",
    "clean_train",
    "normalize_text",
    "prepare",
    "prepare_stage",
    "subset_topk",
]
