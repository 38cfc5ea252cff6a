"""The embed stage (`embed/clip`): frozen CLIP image and text features of every prepared meme,
the input of model C (Hate-CLIPper).

Inputs: `prepared` (the split files), `hm` (the images), `weights:<file>` (full profile: the
Hugging Face files of the CLIP checkpoint under `data/weights/<model_dir>/`). The smoke profile
builds a tiny random CLIP (seeded) and a character-level CLIP tokenizer instead: the same code
path.

Preprocessing is Hate-CLIPper's: the picture, as RGB, squashed to `image_size`² (PIL bicubic),
then the CLIP image processor (a no-op resize and crop at that size, rescale, CLIP mean/std);
the text through the CLIP tokenizer with truncation to the text encoder's 77 positions (the
start token, the first 75 text tokens, the end token: longer texts lose their tail, as
`CLIPTokenizer(..., truncation=True)` does there).

Output (`work/embeddings/clip/`):
    embeddings.safetensors   float32 [N, d] tensors, rows in `ids` order (sorted ids):
        image_pooled  the vision tower's pooled output (post-layernorm CLS), Hate-CLIPper's input
        text_pooled   the text tower's pooled output (final-layernorm end token)
        image_embeds  image_pooled through CLIP's visual projection (= get_image_features)
        text_embeds   text_pooled through CLIP's text projection (= get_text_features)
      metadata: ids (JSON list), format, model, text_max_length, image_size
Resumable: encoded rows are committed to `checkpoint/progress.lmdb` every few seconds; a rerun
in the same attempt dir encodes only the missing ids; the store is written once all are done.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import torch
from PIL import Image
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save as numpy_bytes
from torch import Tensor
from torch.utils.data import DataLoader

from hm_shared.dataset import PREDICT_SPLIT, SPLITS, Meme, read_prepared_split
from hm_shared.errors import HmDataError, MissingWeightsError
from hm_shared.feature_lmdb import put_batch
from hm_shared.io import atomic_write_bytes, atomic_write_json
from hm_shared.spec import STATS_FILE, StageSpec
from hm_torch.checkpoints import sorted_metadata
from hm_torch.data import load_image
from hm_torch.engine import CHECKPOINT_DIR
from hm_torch.params import config_from_params

STORE_FILE = "embeddings.safetensors"
STORE_FORMAT = "1"
COLUMNS = ("image_pooled", "text_pooled", "image_embeds", "text_embeds")
PROGRESS_MAP_SIZE = 1 << 34  # lmdb's address space; the file grows only as rows are written
# the Hugging Face files of a CLIP checkpoint that the stage reads
WEIGHT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json")


@dataclass(frozen=True)
class EmbedConfig:
    """Params of the embed stage (recipe `[embed.clip]`); defaults are the full profile."""

    model_dir: str = "clip-vit-large-patch14"  # under data/weights
    image_size: int = 224  # Hate-CLIPper's --image_size: every picture squashed to this square
    batch_size: int = 16
    num_workers: int = 2  # image decoding processes (0: in the stage process)
    commit_every_s: float = 5.0  # seconds between commits of encoded rows (what a kill loses)
    tiny: bool = False  # smoke profile: a random CLIP of the sizes below, no weight files
    tiny_width: int = 32
    tiny_layers: int = 2
    tiny_heads: int = 2
    tiny_patch: int = 8
    tiny_projection: int = 16
    tiny_seed: int = 0

    @classmethod
    def from_params(cls, params: dict[str, Any], where: str) -> EmbedConfig:
        return config_from_params(cls, params, where, "embed")


# -- the encoder ------------------------------------------------------------------------------


@dataclass
class ClipEncoder:
    """A frozen `transformers.CLIPModel` with its tokenizer and image processor."""

    model: Any  # transformers.CLIPModel
    tokenizer: Any  # transformers.CLIPTokenizer
    processor: Any  # transformers.CLIPImageProcessor
    image_size: int
    name: str

    @property
    def text_max_length(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

    def inputs(self, images: Sequence[Image.Image], texts: Sequence[str]) -> dict[str, Tensor]:
        """pixel_values, input_ids and attention_mask of a batch (texts padded to the longest)."""
        squashed = [
            image.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
            for image in images
        ]
        pixels = self.processor(images=squashed, return_tensors="pt")["pixel_values"]
        tokens = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.text_max_length,
            return_tensors="pt",
        )
        return {
            "pixel_values": pixels,
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
        }

    @torch.no_grad()
    def encode(self, batch: dict[str, Tensor], device: torch.device) -> dict[str, np.ndarray]:
        """The four `COLUMNS` of a batch, float32 numpy [B, d]; bf16 autocast on cuda."""
        model = self.model
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            image = model.vision_model(pixel_values=batch["pixel_values"]).pooler_output
            text = model.text_model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).pooler_output
            out = {
                "image_pooled": image,
                "text_pooled": text,
                "image_embeds": model.visual_projection(image),
                "text_embeds": model.text_projection(text),
            }
        return {k: v.float().cpu().numpy() for k, v in out.items()}


def tiny_tokenizer(save_dir: Path) -> Any:
    """A character-level CLIP tokenizer (byte alphabet, word-end forms, no merges): CLIP's
    tokenizer class and rules with a vocabulary that needs no download. Saved to `save_dir`."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    alphabet = sorted(ByteLevel.alphabet())
    tokens = [*alphabet, *(f"{c}</w>" for c in alphabet), "<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[])
    tokenizer.save_pretrained(save_dir)
    return tokenizer


def tiny_clip(config: EmbedConfig) -> Any:
    """A random CLIPModel of the `tiny_*` sizes (seeded: every process builds the same one)."""
    from transformers import CLIPConfig, CLIPModel

    width, layers, heads = config.tiny_width, config.tiny_layers, config.tiny_heads
    common = {
        "hidden_size": width,
        "intermediate_size": 4 * width,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
    }
    clip_config = CLIPConfig(
        text_config={
            **common,
            "vocab_size": 514,
            "max_position_embeddings": 77,
            "bos_token_id": 512,
            "eos_token_id": 513,
            "pad_token_id": 513,
        },
        vision_config={**common, "image_size": config.image_size, "patch_size": config.tiny_patch},
        projection_dim=config.tiny_projection,
    )
    torch.manual_seed(config.tiny_seed)
    return CLIPModel(clip_config)


def load_clip(model_dir: Path) -> Any:
    """CLIPModel from a Hugging Face checkpoint folder, every weight key matched.

    A missing or unexpected key is an error naming it, except the `position_ids` buffers that
    older exports carry (transformers rebuilds them)."""
    from safetensors.torch import load_file
    from transformers import CLIPConfig, CLIPModel

    missing_files = [name for name in WEIGHT_FILES if not (model_dir / name).is_file()]
    if missing_files:
        raise MissingWeightsError(
            f"CLIP checkpoint incomplete: {missing_files} not found (`orchestrator weights "
            "fetch` downloads them)",
            model_dir,
        )
    model = CLIPModel(CLIPConfig.from_pretrained(model_dir))
    state = load_file(model_dir / "model.safetensors")
    state = {k: v for k, v in state.items() if not k.endswith(".position_ids")}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise HmDataError(
            f"CLIP weights do not match the config: missing {result.missing_keys[:8]}, "
            f"unexpected {result.unexpected_keys[:8]}",
            model_dir / "model.safetensors",
        )
    return model


def build_encoder(config: EmbedConfig, model_dir: Path | None, work_dir: Path) -> ClipEncoder:
    """`model_dir`: the Hugging Face checkpoint folder (None: `tiny`, a random CLIP)."""
    from transformers import CLIPImageProcessor, CLIPTokenizer

    size = config.image_size
    if config.tiny:
        model = tiny_clip(config)
        tokenizer = tiny_tokenizer(work_dir / "tokenizer")
        processor = CLIPImageProcessor(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size}
        )
        name = "tiny random CLIP"
    else:
        if model_dir is None:
            raise MissingWeightsError(
                "the embed stage needs the CLIP checkpoint folder (data/weights) unless tiny = true"
            )
        model = load_clip(model_dir)
        tokenizer = CLIPTokenizer.from_pretrained(model_dir)
        processor = CLIPImageProcessor.from_pretrained(model_dir)
        name = config.model_dir
    model.eval().requires_grad_(False)
    return ClipEncoder(model, tokenizer, processor, size, name)


# -- the stage --------------------------------------------------------------------------------


def stage_memes(prepared: Path) -> list[Meme]:
    """Every meme of the prepared splits (or of `orchestrator predict`'s new memes) once, by id
    (dev_unseen repeats dev_seen ids)."""
    memes: dict[str, Meme] = {}
    for split in (*SPLITS, PREDICT_SPLIT):
        if (prepared / f"{split}.jsonl").is_file():
            for meme in read_prepared_split(prepared, split):
                memes.setdefault(meme.id, meme)
    return [memes[key] for key in sorted(memes)]


class _Collate:
    """Memes → encoder inputs, in the DataLoader workers (image decoding and resizing)."""

    def __init__(self, encoder: ClipEncoder, hm_dir: Path) -> None:
        self.encoder, self.hm_dir = encoder, hm_dir

    def __call__(self, memes: list[Meme]) -> tuple[list[str], dict[str, Tensor]]:
        images = [load_image(self.hm_dir / m.img) for m in memes]
        return [m.id for m in memes], self.encoder.inputs(images, [m.text for m in memes])


def _open_progress(path: Path) -> lmdb.Environment:
    path.mkdir(parents=True, exist_ok=True)
    return lmdb.open(str(path), map_size=PROGRESS_MAP_SIZE, subdir=True, lock=True)


def _done_ids(env: lmdb.Environment) -> set[str]:
    with env.begin() as txn:
        return {bytes(key).decode() for key, _ in txn.cursor()}


def encode_memes(
    encoder: ClipEncoder,
    memes: Sequence[Meme],
    hm_dir: Path,
    progress: Path,
    *,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    commit_every_s: float = 5.0,
) -> int:
    """Encode the memes not yet in the `progress` lmdb; return how many were encoded now."""
    env = _open_progress(progress)
    try:
        done = _done_ids(env)
        todo = [m for m in memes if m.id not in done]
        loader = DataLoader(
            todo,  # type: ignore[arg-type]  # a list is a map-style dataset
            batch_size=batch_size,
            collate_fn=_Collate(encoder, hm_dir),
            num_workers=num_workers,
        )
        pending: list[tuple[bytes, bytes]] = []
        last_commit = time.monotonic()
        for ids, batch in loader:
            columns = encoder.encode(batch, device)
            for row, meme_id in enumerate(ids):
                value = numpy_bytes({name: columns[name][row] for name in COLUMNS})
                pending.append((meme_id.encode(), value))
            if time.monotonic() - last_commit >= commit_every_s:
                put_batch(env, pending)
                pending, last_commit = [], time.monotonic()
        put_batch(env, pending)
        return len(todo)
    finally:
        env.close()


def _read_progress(progress: Path) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    from safetensors.numpy import load as load_bytes

    env = lmdb.open(str(progress), readonly=True, lock=False, subdir=True)
    try:
        with env.begin() as txn:
            for key, value in txn.cursor():
                yield bytes(key).decode(), load_bytes(bytes(value))
    finally:
        env.close()


def write_store(path: Path, rows: dict[str, dict[str, np.ndarray]], meta: dict[str, str]) -> None:
    """The store file: one [N, d] float32 tensor per column, rows in sorted-id order; the same
    rows give the same bytes (a consumer's cache key holds the file's hash)."""
    ids = sorted(rows)
    tensors = {
        name: np.ascontiguousarray(np.stack([rows[i][name] for i in ids]).astype(np.float32))
        for name in COLUMNS
    }
    metadata = {**meta, "format": STORE_FORMAT, "ids": json.dumps(ids)}
    atomic_write_bytes(path, sorted_metadata(numpy_bytes(tensors, metadata=metadata)))


def embed_stage(spec: StageSpec) -> None:
    config = EmbedConfig.from_params(spec.params, f"stage {spec.stage}")
    from hm_torch.train import stage_device

    device = stage_device(spec)
    memes = stage_memes(spec.path("prepared"))
    model_dir = None if config.tiny else spec.weight(config.model_dir, "CLIP checkpoint folder")
    work = spec.output_dir / CHECKPOINT_DIR
    encoder = build_encoder(config, model_dir, work)
    encoder.model.to(device)
    started = time.monotonic()
    encoded = encode_memes(
        encoder,
        memes,
        spec.path("hm"),
        work / "progress.lmdb",
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        device=device,
        commit_every_s=config.commit_every_s,
    )
    rows = dict(_read_progress(work / "progress.lmdb"))
    absent = sorted({m.id for m in memes} - set(rows))
    if absent:
        raise HmDataError(f"{len(absent)} memes were not encoded, e.g. {absent[:5]}", work)
    write_store(
        spec.output_dir / STORE_FILE,
        {m.id: rows[m.id] for m in memes},
        {
            "model": encoder.name,
            "text_max_length": str(encoder.text_max_length),
            "image_size": str(config.image_size),
        },
    )
    seconds = time.monotonic() - started
    atomic_write_json(
        spec.output_dir / STATS_FILE,
        {"memes": len(memes), "encoded_now": encoded, "seconds": round(seconds, 3)},
    )
    print(f"embedded {encoded} of {len(memes)} memes in {seconds:.1f} s", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)


# -- reading the store ------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddingStore:
    """The embed stage's output, read whole (about 160 MB for the real dataset)."""

    ids: list[str]
    columns: dict[str, np.ndarray]
    meta: dict[str, str]

    @classmethod
    def open(cls, directory: Path) -> EmbeddingStore:
        from safetensors import safe_open

        path = Path(directory) / STORE_FILE
        if not path.is_file():
            raise HmDataError("embedding store not found (run the embed stage)", path)
        try:
            with safe_open(str(path), framework="numpy") as handle:
                meta = dict(handle.metadata() or {})
            columns = load_numpy(str(path))
            ids = json.loads(meta["ids"])
        except (OSError, ValueError, KeyError) as exc:
            raise HmDataError(f"not a readable embedding store: {exc}", path) from exc
        if meta.get("format") != STORE_FORMAT or set(columns) != set(COLUMNS):
            raise HmDataError(
                f"embedding store format {meta.get('format')!r} with columns {sorted(columns)}; "
                f"expected format {STORE_FORMAT} with {sorted(COLUMNS)}",
                path,
            )
        return cls(ids, columns, meta)

    def rows(self, meme_ids: Sequence[str], where: Path | str) -> np.ndarray:
        """Row numbers of `meme_ids`; an error naming the first id the store lacks."""
        index = {key: row for row, key in enumerate(self.ids)}
        missing = [key for key in meme_ids if key not in index]
        if missing:
            raise HmDataError(
                f"{len(missing)} meme ids have no embedding (e.g. {missing[:3]}); the store "
                "was made from other prepared splits",
                where,
            )
        return np.array([index[key] for key in meme_ids], dtype=np.int64)


__all__ = [
    "COLUMNS",
    "STORE_FILE",
    "ClipEncoder",
    "EmbedConfig",
    "EmbeddingStore",
    "build_encoder",
    "embed_stage",
    "encode_memes",
    "load_clip",
    "stage_memes",
    "tiny_clip",
    "tiny_tokenizer",
    "write_store",
]
