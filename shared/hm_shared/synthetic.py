"""A synthetic Hateful Memes dataset: the real layout, a label that needs both modalities.

Layout as released: `img/NNNNN.png` (5-digit ids, 200–600 px a side, the meme text drawn on the
picture) and `train`, `dev_seen`, `dev_unseen`, `test_seen`, `test_unseen` .jsonl; the test files
have no `label` key, and most dev_unseen ids are dev_seen ids, as in the real phase-2 release.

Label rule. Each picture shows one large coloured shape on a plain background with a few grey
distractors; the shape's category (`CATEGORIES`) is either a *target* or not. Each text is a
short sentence about a fictional group whose predicate is an *attack* phrase or a *benign* one.
A meme is hateful iff its picture is a target category AND its text is an attack. Every hateful
meme comes with two benign confounders, as in the real data: an image twin (same text, a
non-target picture) and a text twin (same picture, a benign text); the rest are random
non-hateful memes. So text alone and image alone are both near chance; together they are exact.
Train also holds a few exact duplicates (same picture, text and label under another id) and a few
ambiguous ones (same picture and text, the label flipped), which the prepare stage removes.

Deterministic: the same seed, sizes and id style give byte-identical files (Python's `random`
with a fixed seed, Pillow's built-in bitmap font, fixed PNG encoder settings).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from hm_shared.dataset import IMG_DIR, LABELLED_SPLITS, SPLITS
from hm_shared.errors import HmDataError
from hm_shared.io import atomic_write_bytes, atomic_write_text

DEFAULT_SIZES = {
    "train": 400,
    "dev_seen": 60,
    "dev_unseen": 66,
    "test_seen": 100,
    "test_unseen": 160,
}
REAL_SIZES = {
    "train": 8500,
    "dev_seen": 500,
    "dev_unseen": 540,
    "test_seen": 1000,
    "test_unseen": 2000,
}
DEV_UNSEEN_SHARED = 400 / 540  # share of dev_unseen ids that are dev_seen ids (real data)
HATEFUL_TRIPLETS = 0.3  # hateful share; each brings 2 confounders, so 90% of a split is triplets
DUPLICATES = 0.02  # train rows that exactly repeat another train row
AMBIGUOUS = 0.01  # train rows that repeat another with the opposite label
MIN_SIDE, MAX_SIDE = 200, 600
# Fixed encoder settings: byte-identical output; level 1 is 4x faster than 6 for ~20% more bytes.
_PNG = {"format": "PNG", "compress_level": 1, "optimize": False}


@dataclass(frozen=True)
class Category:
    name: str
    shape: str
    colour: tuple[int, int, int]
    target: bool


CATEGORIES = (
    Category("red_disc", "disc", (215, 35, 35), True),
    Category("green_triangle", "triangle", (30, 170, 60), True),
    Category("purple_ring", "ring", (135, 45, 185), True),
    Category("blue_square", "square", (35, 75, 215), False),
    Category("orange_cross", "cross", (240, 140, 20), False),
    Category("cyan_diamond", "diamond", (20, 190, 200), False),
)
TARGETS = tuple(c for c in CATEGORIES if c.target)
NON_TARGETS = tuple(c for c in CATEGORIES if not c.target)

# Fictional groups and mild predicates: the text category must be learnable from the words.
GROUPS = (
    "the florbs",
    "the quiblings",
    "the zentari",
    "the morvish",
    "the pellites",
    "the drunes",
    "those yarvans",
    "the glimmerfolk",
)
ATTACK = (
    "are vermin",
    "are worthless parasites",
    "should be banned from everything",
    "do not deserve to live here",
    "are all criminals",
    "ruin every town they touch",
    "are a plague on us",
    "must be kept out",
)
BENIGN = (
    "love a good picnic",
    "make the best soup",
    "are great at chess",
    "just won the cup",
    "are planting tomatoes",
    "always bring snacks",
    "dance on fridays",
    "built a lovely bridge",
)
OPENERS = (
    "",
    "when",
    "fun fact:",
    "remember:",
    "everyone knows",
    "me explaining that",
    "my uncle says",
    "reminder that",
    "breaking news:",
    "they told me",
)
ENDINGS = (
    "",
    "lol",
    "for real",
    "no joke",
    "every single time",
    "and nobody talks about it",
    "#facts",
    "just saying",
    "again",
    "since {year}",
)


@dataclass(frozen=True)
class Scene:
    """Everything that decides a picture but its text; equal scenes give equal pixels."""

    width: int
    height: int
    category: Category
    background: tuple[tuple[int, int, int], tuple[int, int, int]]
    vertical: bool
    centre: tuple[float, float]  # shape centre, fractions of width and height
    scale: float  # shape size, fraction of the shorter side
    colour_jitter: tuple[int, int, int]
    distractors: tuple[tuple[float, float, float, int], ...]  # (x, y, radius, grey), fractions


@dataclass(frozen=True)
class SynthMeme:
    """One planned meme: what is drawn and written, and why it has its label."""

    id: int
    scene: Scene
    text: str
    attack: bool
    label: int
    kind: str  # hateful | image_twin | text_twin | random | duplicate | ambiguous
    twin_of: int | None = field(default=None)

    @property
    def stem(self) -> str:
        return f"{self.id:05d}"


def label_rule(category: Category, attack: bool) -> int:
    """1 iff the picture is a target category and the text an attack.

    >>> [label_rule(c, a) for c, a in [(TARGETS[0], True), (NON_TARGETS[0], True),
    ...                                 (TARGETS[0], False)]]
    [1, 0, 0]
    """
    return int(category.target and attack)


class _Planner:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.used_texts: set[str] = set()

    def scene(self, category: Category) -> Scene:
        rng = self.rng
        pastel = [tuple(rng.randrange(150, 256) for _ in range(3)) for _ in range(2)]
        return Scene(
            width=rng.randrange(MIN_SIDE, MAX_SIDE + 1),
            height=rng.randrange(MIN_SIDE, MAX_SIDE + 1),
            category=category,
            background=(pastel[0], pastel[1]),  # type: ignore[arg-type]
            vertical=rng.random() < 0.5,
            centre=(rng.uniform(0.35, 0.65), rng.uniform(0.4, 0.6)),
            scale=rng.uniform(0.45, 0.65),
            colour_jitter=tuple(rng.randrange(-20, 21) for _ in range(3)),  # type: ignore[arg-type]
            distractors=tuple(
                (rng.random(), rng.random(), rng.uniform(0.02, 0.06), rng.randrange(90, 200))
                for _ in range(rng.randrange(2, 7))
            ),
        )

    def text(self, attack: bool) -> str:
        """A sentence of the asked category, not used before by another planned meme."""
        rng = self.rng
        for _ in range(100):
            ending = rng.choice(ENDINGS).format(year=rng.randrange(1950, 2020))
            words = (
                rng.choice(OPENERS),
                rng.choice(GROUPS),
                rng.choice(ATTACK if attack else BENIGN),
                ending,
            )
            text = " ".join(w for w in words if w)
            if text not in self.used_texts:
                break
        else:  # vocabulary exhausted (real-size sets): a counter keeps it unique
            text = f"{text} #{len(self.used_texts)}"
        self.used_texts.add(text)
        return text

    def triplet(self) -> list[tuple[Scene, str, bool, str]]:
        target_scene = self.scene(self.rng.choice(TARGETS))
        attack_text = self.text(attack=True)
        return [
            (target_scene, attack_text, True, "hateful"),
            (self.scene(self.rng.choice(NON_TARGETS)), attack_text, True, "image_twin"),
            (target_scene, self.text(attack=False), False, "text_twin"),
        ]

    def random_benign(self) -> tuple[Scene, str, bool, str]:
        target, attack = self.rng.choice([(False, True), (True, False), (False, False)])
        category = self.rng.choice(TARGETS if target else NON_TARGETS)
        return (self.scene(category), self.text(attack), attack, "random")


def plan(seed: int = 0, sizes: Mapping[str, int] | None = None) -> dict[str, list[SynthMeme]]:
    """The memes of every split, before anything is drawn (see the module docstring)."""
    sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
    unknown = sorted(set(sizes) - set(SPLITS))
    if unknown or any(sizes.get(s, 0) < 1 for s in SPLITS):
        raise ValueError(f"sizes must give a positive count for each of {SPLITS}, got {sizes}")
    if sum(sizes.values()) > 90_000:
        raise ValueError(f"at most 90000 memes fit in 5-digit ids, got {sum(sizes.values())}")
    planner = _Planner(seed)
    rows: dict[str, list[tuple[Scene, str, bool, str]]] = {}
    for split in ("train", "dev_seen", "test_seen", "test_unseen", "dev_unseen"):
        n = sizes[split]
        fresh = n
        if split == "train":
            fresh = n - round(n * DUPLICATES) - round(n * AMBIGUOUS)
        elif split == "dev_unseen":
            fresh = n - min(sizes["dev_seen"], round(n * DEV_UNSEEN_SHARED))
        triplets = (
            []
            if split == "dev_unseen"
            else [
                row
                for _ in range(min(round(n * HATEFUL_TRIPLETS), fresh // 3))
                for row in planner.triplet()
            ]
        )
        # dev_unseen's own memes are all non-hateful, like the 140 new ones of the real split.
        rows[split] = triplets + [planner.random_benign() for _ in range(fresh - len(triplets))]
    copies = sizes["train"] - len(rows["train"])
    ids = iter(planner.rng.sample(range(1, 100_000), sum(map(len, rows.values())) + copies))
    out: dict[str, list[SynthMeme]] = {}
    for split, split_rows in rows.items():
        memes = [
            SynthMeme(next(ids), scene, text, attack, label_rule(scene.category, attack), kind)
            for scene, text, attack, kind in split_rows
        ]
        out[split] = _link_twins(memes)
    _add_train_copies(planner.rng, out["train"], sizes["train"], ids)
    shared = planner.rng.sample(out["dev_seen"], sizes["dev_unseen"] - len(out["dev_unseen"]))
    out["dev_unseen"] += shared
    for split in SPLITS:
        planner.rng.shuffle(out[split])
    return {split: out[split] for split in SPLITS}


def _link_twins(memes: list[SynthMeme]) -> list[SynthMeme]:
    hateful = None
    linked = []
    for meme in memes:
        if meme.kind == "hateful":
            hateful = meme.id
        linked.append(replace(meme, twin_of=hateful) if meme.kind.endswith("_twin") else meme)
    return linked


def _add_train_copies(
    rng: random.Random, train: list[SynthMeme], size: int, ids: Iterator[int]
) -> None:
    originals = list(train)
    for kind, count in (
        ("duplicate", size - len(train) - round(size * AMBIGUOUS)),
        ("ambiguous", round(size * AMBIGUOUS)),
    ):
        # Sampled without replacement so each duplicate group has exactly two rows.
        for source in rng.sample(originals, count):
            originals.remove(source)
            label = source.label if kind == "duplicate" else 1 - source.label
            train.append(replace(source, id=next(ids), label=label, kind=kind, twin_of=source.id))


def _draw_shape(draw: ImageDraw.ImageDraw, scene: Scene) -> None:
    w, h = scene.width, scene.height
    cx, cy = scene.centre[0] * w, scene.centre[1] * h
    r = scene.scale * min(w, h) / 2
    colour = tuple(
        max(0, min(255, c + j))
        for c, j in zip(scene.category.colour, scene.colour_jitter, strict=True)
    )
    box = (cx - r, cy - r, cx + r, cy + r)
    shape = scene.category.shape
    if shape == "disc":
        draw.ellipse(box, fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=max(4, round(r * 0.35)))
    elif shape == "square":
        draw.rectangle((cx - 0.85 * r, cy - 0.85 * r, cx + 0.85 * r, cy + 0.85 * r), fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + 0.8 * r), (cx - r, cy + 0.8 * r)], fill=colour)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
    elif shape == "cross":
        t = 0.3 * r
        draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=colour)
        draw.rectangle((cx - t, cy - r, cx + t, cy + r), fill=colour)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word[:width])
    return lines


def _draw_text(image: Image.Image, text: str) -> None:
    """Meme-style text: white with a black outline, the first half on top, the rest below."""
    font = ImageFont.load_default_imagefont()  # 6x11 px monospace bitmap, no font file needed
    zoom = max(2, image.width // 160)
    lines = _wrap(text.upper(), max(8, (image.width - 8) // (6 * zoom)))
    half = (len(lines) + 1) // 2
    for block, at_top in ((lines[:half], True), (lines[half:], False)):
        if not block:
            continue
        mask = Image.new("L", (max(len(s) for s in block) * 6 + 2, 12 * len(block) + 2), 0)
        draw = ImageDraw.Draw(mask)
        for i, line in enumerate(block):
            draw.text((1, 1 + 12 * i), line, fill=255, font=font)
        outline = mask.filter(ImageFilter.MaxFilter(3))  # 1 px at 1x, `zoom` px once zoomed
        size = (mask.width * zoom, mask.height * zoom)
        mask = mask.resize(size, Image.Resampling.NEAREST)
        outline = outline.resize(size, Image.Resampling.NEAREST)
        x = (image.width - mask.width) // 2
        y = 4 if at_top else image.height - mask.height - 4
        image.paste((0, 0, 0), (x, y), outline)
        image.paste((255, 255, 255), (x, y), mask)


def render(scene: Scene, text: str) -> bytes:
    """The PNG bytes of one meme picture."""
    (r0, g0, b0), (r1, g1, b1) = scene.background
    ramp = Image.linear_gradient("L")  # 256x256, black at the top to white at the bottom
    if not scene.vertical:
        ramp = ramp.transpose(Image.Transpose.ROTATE_90)
    ramp = ramp.resize((scene.width, scene.height), Image.Resampling.BILINEAR)
    image = Image.merge(
        "RGB",
        [
            ramp.point(lambda v, a=a, b=b: a + (b - a) * v // 255)
            for a, b in ((r0, r1), (g0, g1), (b0, b1))
        ],
    )
    draw = ImageDraw.Draw(image)
    side = min(scene.width, scene.height)
    for x, y, radius, grey in scene.distractors:
        rad = radius * side
        px, py = x * scene.width, y * scene.height
        draw.ellipse((px - rad, py - rad, px + rad, py + rad), fill=(grey, grey, grey))
    _draw_shape(draw, scene)
    _draw_text(image, text)
    buffer = io.BytesIO()
    image.save(buffer, **_PNG)
    return buffer.getvalue()


def _row(meme: SynthMeme, split: str, int_ids: bool) -> str:
    row: dict[str, object] = {
        "id": meme.id if int_ids else meme.stem,
        "img": f"{IMG_DIR}/{meme.stem}.png",
    }
    if split in LABELLED_SPLITS:
        row["label"] = meme.label
    row["text"] = meme.text
    return json.dumps(row) + "\n"


def generate(
    out_dir: Path,
    *,
    seed: int = 0,
    sizes: Mapping[str, int] | None = None,
    int_ids: bool = False,
) -> Path:
    """Write a synthetic dataset into `out_dir` (created, must be empty); returns `out_dir`.

    `sizes` maps each split to its meme count (default `DEFAULT_SIZES`; `REAL_SIZES` for the
    real release's). `int_ids` writes integer ids (leading zeros lost) like the DrivenData files.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise HmDataError(
            "not empty; the synthetic dataset is only written into an empty "
            "directory, so no user file is ever overwritten",
            out_dir,
        )
    memes = plan(seed, sizes)
    drawn: set[int] = set()
    for split in SPLITS:
        for meme in memes[split]:
            if meme.id not in drawn:  # dev_seen memes reappear in dev_unseen
                drawn.add(meme.id)
                atomic_write_bytes(
                    out_dir / IMG_DIR / f"{meme.stem}.png", render(meme.scene, meme.text)
                )
        text = "".join(_row(m, split, int_ids) for m in memes[split])
        atomic_write_text(out_dir / f"{split}.jsonl", text)
    return out_dir


def scaled_sizes(scale: float) -> dict[str, int]:
    """`REAL_SIZES` times `scale`, at least 4 memes a split.

    >>> scaled_sizes(0.1)
    {'train': 850, 'dev_seen': 50, 'dev_unseen': 54, 'test_seen': 100, 'test_unseen': 200}
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    return {split: max(4, round(n * scale)) for split, n in REAL_SIZES.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hm_shared.synthetic",
        description="Write a synthetic Hateful Memes dataset (real layout) into OUT.",
        epilog="Example: python -m hm_shared.synthetic data/hm --scale 1  (the real sizes)",
    )
    parser.add_argument("out", type=Path, metavar="OUT", help="empty or new directory")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--scale",
        type=float,
        default=None,
        help="fraction of the real split sizes (1 = 8500/500/540/1000/2000); "
        f"default: the small set {tuple(DEFAULT_SIZES.values())}",
    )
    parser.add_argument(
        "--int-ids",
        action="store_true",
        help="integer ids without leading zeros, like the DrivenData files",
    )
    args = parser.parse_args(argv)
    sizes = None if args.scale is None else scaled_sizes(args.scale)
    try:
        generate(args.out, seed=args.seed, sizes=sizes, int_ids=args.int_ids)
    except HmDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    counts = {s: n for s, n in (sizes or DEFAULT_SIZES).items()}
    print(f"synthetic dataset (seed {args.seed}) written to {args.out}: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
