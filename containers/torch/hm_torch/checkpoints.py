"""Loading upstream checkpoints through explicit rename tables.

A loader is a list of `(upstream_key, our_key)` pairs (per-layer pairs generated from format
strings), read with `torch.load(weights_only=True)`. Every key is accounted for in a
`hm_shared.key_account.KeyAccount` (the same in every environment):
our keys that got no value (missing), upstream keys that went nowhere (unexpected) and shape
mismatches. Loading fails unless all three are empty or each leftover key matches an allow-list
pattern that carries its reason.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from hm_shared.errors import HmDataError
from hm_shared.io import atomic_write_bytes
from hm_shared.key_account import KeyAccount

Pairs = list[tuple[str, str]]
Adapter = Callable[[Tensor, torch.Size], Tensor]

# Parameters of one post-LN BERT layer, below `encoder.layer.{i}.` (HF / original BERT names).
_LAYER_MODULES = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "attention.output.LayerNorm",
    "intermediate.dense",
    "output.dense",
    "output.LayerNorm",
)
_TEXT_EMBEDDINGS = ("word_embeddings", "position_embeddings", "token_type_embeddings")


def linear_pairs(upstream: str, ours: str) -> Pairs:
    """`weight` and `bias` of one Linear or LayerNorm."""
    return [(f"{upstream}.{name}", f"{ours}.{name}") for name in ("weight", "bias")]


def layer_pairs(upstream_fmt: str, ours_fmt: str, num_layers: int) -> Pairs:
    """All parameters of `num_layers` BERT layers; the formats take `{i}`."""
    pairs: Pairs = []
    for i in range(num_layers):
        for module in _LAYER_MODULES:
            pairs += linear_pairs(
                f"{upstream_fmt.format(i=i)}.{module}", f"{ours_fmt.format(i=i)}.{module}"
            )
    return pairs


def bert_pairs(upstream: str, ours: str, num_layers: int) -> Pairs:
    """Text embeddings, encoder and pooler of a BERT below the given prefixes (`"uniter."` …)."""
    pairs = [
        (f"{upstream}embeddings.{name}.weight", f"{ours}embeddings.{name}.weight")
        for name in _TEXT_EMBEDDINGS
    ]
    pairs += linear_pairs(f"{upstream}embeddings.LayerNorm", f"{ours}embeddings.LayerNorm")
    pairs += layer_pairs(f"{upstream}encoder.layer.{{i}}", f"{ours}encoder.layer.{{i}}", num_layers)
    pairs += linear_pairs(f"{upstream}pooler.dense", f"{ours}pooler.dense")
    return pairs


def pretraining_head_pairs(upstream: str, ours: str) -> Pairs:
    """BERT's `cls` heads. The decoder weight is tied to the word embeddings and is not mapped."""
    pairs = linear_pairs(
        f"{upstream}predictions.transform.dense", f"{ours}predictions.transform.dense"
    )
    pairs += linear_pairs(
        f"{upstream}predictions.transform.LayerNorm", f"{ours}predictions.transform.LayerNorm"
    )
    pairs.append((f"{upstream}predictions.bias", f"{ours}predictions.bias"))
    pairs += linear_pairs(f"{upstream}seq_relationship", f"{ours}seq_relationship")
    return pairs


def slice_columns(tensor: Tensor, target: torch.Size) -> Tensor:
    """Keep the first input columns of a Linear weight (vilio: 2054-wide OSCAR layer → 2052)."""
    if tensor.ndim != 2 or tensor.shape[0] != target[0] or tensor.shape[1] < target[1]:
        return tensor  # left as is: the report names the mismatch
    return tensor[:, : target[1]]


@dataclass
class CheckpointFormat:
    """How one upstream file layout maps onto one of our models."""

    name: str
    pairs: Pairs
    allow_missing: Mapping[str, str] = field(default_factory=dict)  # our-key pattern → reason
    allow_unexpected: Mapping[str, str] = field(default_factory=dict)  # upstream pattern → reason
    adapters: Mapping[str, Adapter] = field(default_factory=dict)  # our key → reshaping
    legacy_renames: Mapping[str, str] = field(default_factory=dict)  # key suffix → suffix


# (the model to load into, the upstream state dict after `module.` is stripped, the file's name
# for errors) → how that file maps onto the model: each model file provides its own
FormatFor = Callable[[nn.Module, Mapping[str, Tensor], str], CheckpointFormat]


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors of a `.pt`/`.pth`/`.bin` (torch, weights only) or `.safetensors` file.

    Unwraps `{"model": state_dict}`, strips DataParallel/SWA `module.` prefixes and drops SWA's
    `n_averaged` counter."""
    path = Path(path)
    if not path.is_file():
        raise HmDataError("checkpoint file not found", path)
    try:
        if path.suffix == ".safetensors":
            raw: object = load_file(path)
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises several unrelated types on a bad file
        raise HmDataError(f"cannot read checkpoint ({type(exc).__name__}: {exc})", path) from exc
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        raw = raw["model"]
    if not isinstance(raw, dict) or not raw:
        raise HmDataError("expected a non-empty dict of tensors (a state_dict)", path)
    state: dict[str, Tensor] = {}
    for key, value in raw.items():
        if key.endswith("n_averaged"):
            continue
        if not isinstance(value, Tensor):
            raise HmDataError(
                f"key {key!r} holds a {type(value).__name__}, expected a tensor", path
            )
        state[key.removeprefix("module.")] = value
    return state


def _matches(key: str, patterns: Mapping[str, str]) -> str | None:
    for pattern, reason in patterns.items():
        if fnmatch.fnmatchcase(key, pattern):
            return reason
    return None


def _tied_keys(model: nn.Module) -> dict[str, str]:
    """our key → the first key sharing its storage (tied weights appear once in the report)."""
    first: dict[int, str] = {}
    tied: dict[str, str] = {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        ptr = tensor.data_ptr()
        if ptr in first and tensor.numel():
            tied[key] = first[ptr]
        else:
            first.setdefault(ptr, key)
    return tied


_POSITION_IDS = (
    "a buffer of position indices 0…n−1 (HF BertEmbeddings, e.g. vilio's LAST_BO.pth), not a weight"
)


def _is_position_ids(key: str, tensor: Tensor) -> bool:
    """transformers ≥ 3 saves `embeddings.position_ids` = arange(n) (shape (1, n)) in its state
    dicts. Accepted only with exactly that content: anything else is reported."""
    if not key.endswith("embeddings.position_ids") or tensor.dtype not in (
        torch.int64,
        torch.int32,
    ):
        return False
    flat = tensor.reshape(-1)
    return tensor.ndim <= 2 and torch.equal(flat, torch.arange(flat.numel(), dtype=flat.dtype))


def apply_state_dict(
    model: nn.Module, state: Mapping[str, Tensor], fmt: CheckpointFormat, source: str
) -> KeyAccount:
    """Rename `state` by `fmt`, copy it into `model`, and return the full account (not raised)."""
    report = KeyAccount(source=source, format=fmt.name)
    for old, new in fmt.legacy_renames.items():
        state = {(k[: -len(old)] + new if k.endswith(old) else k): v for k, v in state.items()}
    ours = model.state_dict()
    tied = _tied_keys(model)
    mapping = dict(fmt.pairs)
    renamed: dict[str, Tensor] = {}
    for key in sorted(state):
        target = mapping.get(key)
        if target is None or target not in ours:
            reason = _matches(key, fmt.allow_unexpected)
            if reason is None and _is_position_ids(key, state[key]):
                reason = _POSITION_IDS
            if reason is None:
                report.unexpected.append(key)
            else:
                report.allowed.append((key, reason))
            continue
        tensor = state[key]
        if target in fmt.adapters:
            tensor = fmt.adapters[target](tensor, ours[target].shape)
        if tensor.shape != ours[target].shape:
            report.mismatched.append(
                f"{key}: file {tuple(tensor.shape)} ≠ ours {tuple(ours[target].shape)}"
            )
            continue
        renamed[target] = tensor
    for key in ours:
        if key in renamed or tied.get(key) in renamed:
            continue
        reason = _matches(key, fmt.allow_missing)
        if reason is None:
            report.missing.append(key)
        else:
            report.allowed.append((key, reason))
    model.load_state_dict(renamed, strict=False)
    report.loaded = sorted(renamed)
    return report


_EXPECTED = (
    "Check that the file is the {} checkpoint named in recipes.toml and the config size matches"
)


def load_checkpoint(model: nn.Module, path: Path, fmt: CheckpointFormat) -> KeyAccount:
    """Load `path` into `model` through `fmt`; raises `HmDataError` naming every unaccounted key."""
    report = apply_state_dict(model, read_state_dict(path), fmt, str(path))
    report.raise_for_errors(_EXPECTED.format(fmt.name))
    return report


NATIVE_MARK = "hm_torch"


def save_native(model: nn.Module, path: Path, config: dict[str, object]) -> None:
    """Our checkpoint format: safetensors with the model class and its config as metadata;
    written atomically, byte-identical for identical weights (a consumer's cache key holds the
    file's hash)."""
    metadata = {"format": NATIVE_MARK, "model": type(model).__name__, "config": json.dumps(config)}
    tied = _tied_keys(model)  # a tied weight is stored once, under its first name
    state = {
        k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k not in tied
    }
    write_safetensors(path, state, metadata)


def write_safetensors(
    path: Path, state: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """The one safetensors writer of hm_torch: atomic (temp file, fsync, rename), metadata in
    name order so that the same tensors always give the same bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = safetensors_bytes(dict(state), metadata=dict(metadata) if metadata else None)
    atomic_write_bytes(path, sorted_metadata(blob))


def sorted_metadata(blob: bytes) -> bytes:
    """A safetensors file with its metadata entries in name order. The library writes them in
    its hash map's order, which changes from save to save: the same weights gave other bytes."""
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + size])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format pads its header to 8 bytes with spaces
    return len(text).to_bytes(8, "little") + text + blob[8 + size :]


def native_metadata(path: Path) -> dict[str, str]:
    """Metadata of a `.safetensors` file (empty for other files)."""
    if Path(path).suffix != ".safetensors":
        return {}
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata() or {}


def is_native(path: Path) -> bool:
    return native_metadata(path).get("format") == NATIVE_MARK


def native_format(
    model: nn.Module, keep: Iterable[str], allow_unexpected: Mapping[str, str]
) -> CheckpointFormat:
    """Our own files (a task-pretraining output): identity pairs for our keys under the `keep`
    prefixes; our other top-level modules may stay as initialised."""
    prefixes = tuple(keep)
    keys = list(model.state_dict())
    others = sorted({k.split(".")[0] for k in keys if not k.startswith(prefixes)})
    return CheckpointFormat(
        name="native",
        pairs=[(k, k) for k in keys if k.startswith(prefixes)],
        allow_missing={f"{top}.*": "task head: intentionally random" for top in others},
        allow_unexpected=allow_unexpected,
    )


HEAD_RANDOM = "task head: intentionally random (trained from scratch, as upstream)"
TIED = "tied to the word embeddings"


def load_pretrained(
    model: nn.Module, path: Path, format_for: FormatFor, backbone: str
) -> KeyAccount:
    """Load an upstream checkpoint (through the model file's `format_for`), or our own task
    pre-training output (its `backbone` module, heads left as initialised), into `model`.
    `HmDataError` names every unaccounted key."""
    state = read_state_dict(path)
    if is_native(path):
        fmt = native_format(model, [f"{backbone}."], {"cls.*": "pre-training heads, not used here"})
    else:
        fmt = format_for(model, state, str(path))
    report = apply_state_dict(model, state, fmt, str(path))
    report.raise_for_errors(_EXPECTED.format(fmt.name))
    return report


__all__ = [
    "HEAD_RANDOM",
    "TIED",
    "Adapter",
    "CheckpointFormat",
    "FormatFor",
    "Pairs",
    "apply_state_dict",
    "bert_pairs",
    "is_native",
    "layer_pairs",
    "linear_pairs",
    "load_checkpoint",
    "load_pretrained",
    "native_format",
    "native_metadata",
    "pretraining_head_pairs",
    "read_state_dict",
    "save_native",
    "slice_columns",
    "write_safetensors",
]
