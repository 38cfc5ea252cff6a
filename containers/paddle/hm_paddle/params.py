"""The released ERNIE-ViL `params/` directories: Paddle 1.x per-variable files, read with numpy.

Each file is one variable, named after it, in the LoDTensor stream layout (reference/models.md §6):
uint32 version 0 · uint64 lod_level (+ levels) · uint32 tensor version 0 · int32 desc size ·
TensorDesc protobuf (data_type = 1, dims = 2) · raw little-endian C-order data.
The rename table maps every upstream name onto a key of `ErnieVilForHatefulMemes.state_dict()`;
loading fails on any missing, unexpected or shape-mismatched variable, naming it.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from hm_paddle.model import ErnieVilConfig, ErnieVilForHatefulMemes
from hm_shared.errors import HmDataError
from hm_shared.io import atomic_write_bytes
from hm_shared.key_account import KeyAccount

# VarType.Type enum values of framework.proto.
_DTYPES: dict[int, np.dtype] = {
    0: np.dtype(np.bool_),
    1: np.dtype("<i2"),
    2: np.dtype("<i4"),
    3: np.dtype("<i8"),
    4: np.dtype("<f2"),
    5: np.dtype("<f4"),
    6: np.dtype("<f8"),
    19: np.dtype("<u8"),
    20: np.dtype(np.uint8),
    21: np.dtype(np.int8),
}
_CODES = {dtype: code for code, dtype in _DTYPES.items()}

# The head vilio adds for Hateful Memes: random unless the directory is a vilio fine-tune output.
HEAD = {"hm_fc.w_0": "hm_fc.weight", "hm_fc.b_0": "hm_fc.bias"}
# Variables a params/ directory may carry that the HM model has no use for: Adam state, the
# step counter and the learning-rate variable of `save_persistables` outputs (a vilio fine-tune
# output dir: `scheduled_learning_rate` is `manual_warmup_decay`'s, `learning_rate_N` the
# constant one without warm-up), and the heads of the VCR fine-tuning tasks.
IGNORED = (
    r".*_moment[12]_\d+",
    r".*_beta[12]_pow_acc_\d+",
    r"learning_rate_\d+",
    r"scheduled_learning_rate",
    r"@LR_DECAY_COUNTER@",
    r"vcr_qa_fc\.[wb]_0",
    r"vcr_qar_fc\.[wb]_0",
)

# Pre-training heads of ERNIE's own models, by the names its pre-training code gives them
# (PaddlePaddle/ERNIE `model/ernie.py` `get_pretraining_output`, and its converters): the
# masked-word transform and output bias (output weight when not shared with the embedding), the
# next-sentence head and the text pooler. A released params/ that carries them loads; they are
# reported as unused upstream heads. ERNIE-ViL's image-side pre-training heads were never
# published, so no name for them is assumed: those stay "unexpected" (recipe `ignore_params`).
UPSTREAM_HEADS = (
    r"mask_lm_trans_fc\.[wb]_0",
    r"mask_lm_trans_layer_norm_(scale|bias)",
    r"mask_lm_out_fc\.[wb]_0",
    r"next_sent_fc\.[wb]_0",
    r"pooled_fc\.[wb]_0",
)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7


def _parse_desc(buf: bytes) -> tuple[int, list[int]]:
    """(data_type, dims) of a TensorDesc; dims may be packed or not (proto2 writes unpacked)."""
    data_type, dims, pos = None, [], 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if number == 1 and wire == 0:
            data_type, pos = _varint(buf, pos)
        elif number == 2 and wire == 0:
            dim, pos = _varint(buf, pos)
            dims.append(dim)
        elif number == 2 and wire == 2:
            size, pos = _varint(buf, pos)
            end = pos + size
            while pos < end:
                dim, pos = _varint(buf, pos)
                dims.append(dim)
        else:
            raise ValueError(f"unexpected protobuf field {number} (wire type {wire})")
    if data_type is None:
        raise ValueError("TensorDesc without data_type")
    # int64 dims are two's complement varints: -1 would be 2**64 - 1.
    return data_type, [d - (1 << 64) if d >= 1 << 63 else d for d in dims]


def read_lod_tensor(path: Path) -> np.ndarray:
    """One variable file as a numpy array; any malformation is an error naming the file."""
    raw = Path(path).read_bytes()
    try:
        (version,) = struct.unpack_from("<I", raw, 0)
        if version != 0:
            raise ValueError(f"LoDTensor version {version}, expected 0")
        (lod_level,) = struct.unpack_from("<Q", raw, 4)
        pos = 12
        for _ in range(lod_level):
            (size,) = struct.unpack_from("<Q", raw, pos)
            pos += 8 + size
        (tensor_version, desc_size) = struct.unpack_from("<Ii", raw, pos)
        if tensor_version != 0:
            raise ValueError(f"tensor version {tensor_version}, expected 0")
        pos += 8
        data_type, dims = _parse_desc(raw[pos : pos + desc_size])
        pos += desc_size
        if data_type not in _DTYPES:
            raise ValueError(f"unsupported data type code {data_type}")
        dtype = _DTYPES[data_type]
        count = int(np.prod(dims)) if dims else 1
        if len(raw) - pos != count * dtype.itemsize:
            raise ValueError(
                f"{len(raw) - pos} data bytes, expected {count * dtype.itemsize} "
                f"for shape {dims} of {dtype}"
            )
    except (struct.error, ValueError) as exc:
        raise HmDataError(f"not a Paddle LoDTensor variable file: {exc}", path) from exc
    return np.frombuffer(raw, dtype=dtype, offset=pos).reshape(dims).copy()


def _desc_bytes(code: int, dims: Iterable[int]) -> bytes:
    def varint(value: int) -> bytes:
        value &= (1 << 64) - 1
        out = bytearray()
        while True:
            byte, value = value & 0x7F, value >> 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                return bytes(out)

    return b"\x08" + varint(code) + b"".join(b"\x10" + varint(d) for d in dims)


def write_lod_tensor(path: Path, array: np.ndarray) -> None:
    """Write `array` in the same per-variable layout (used by tests and tools), atomically."""
    array = np.ascontiguousarray(array)
    dtype = array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype
    desc = _desc_bytes(_CODES[np.dtype(dtype)], array.shape)
    header = struct.pack("<IQIi", 0, 0, 0, len(desc))
    atomic_write_bytes(Path(path), header + desc + array.astype(dtype, copy=False).tobytes())


def read_params_dir(root: Path) -> dict[str, np.ndarray]:
    """Every variable file of a flat `params/` directory, by variable name."""
    root = Path(root)
    if not root.is_dir():
        raise HmDataError(
            "ERNIE-ViL params directory not found; expected the params/ folder of "
            "the released tarball (one file per variable)",
            root,
        )
    files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.endswith(".tmp"))
    if not files:
        raise HmDataError("no variable files in the params directory", root)
    return {p.name: read_lod_tensor(p) for p in files}


def _fc(upstream: str, ours: str) -> dict[str, str]:
    return {f"{upstream}.w_0": f"{ours}.weight", f"{upstream}.b_0": f"{ours}.bias"}


def _ln(upstream: str, ours: str) -> dict[str, str]:
    return {
        f"{upstream}_layer_norm_scale": f"{ours}.weight",
        f"{upstream}_layer_norm_bias": f"{ours}.bias",
    }


def _block(up: str, ours: str, vl: str = "") -> dict[str, str]:
    """Names of one attention + FFN block; `vl` = "vl_" for the image half of a co-layer."""
    out: dict[str, str] = {}
    att = f"{ours}.{vl}multi_head_att"
    for part in ("query", "key", "value", "output"):
        out |= _fc(f"{up}_{vl}multi_head_att_{part}_fc", f"{att}.{part}_fc")
    out |= _ln(f"{up}_{vl}post_att", f"{ours}.{vl}post_att_layer_norm")
    out |= _fc(f"{up}_{vl}ffn_fc_0", f"{ours}.{vl}ffn.fc_0")
    out |= _fc(f"{up}_{vl}ffn_fc_1", f"{ours}.{vl}ffn.fc_1")
    out |= _ln(f"{up}_{vl}post_ffn", f"{ours}.{vl}post_ffn_layer_norm")
    return out


def rename_table(cfg: ErnieVilConfig) -> dict[str, str]:
    """Upstream variable name → our state_dict key, for every encoder variable (not the head)."""
    m = "ernie_vil"
    table = {
        "word_embedding": f"{m}.word_embedding.weight",
        "pos_embedding": f"{m}.pos_embedding.weight",
        "sent_embedding": f"{m}.sent_embedding.weight",
        **_ln("pre_encoder", f"{m}.pre_encoder_layer_norm"),
        **_fc("image_emb", f"{m}.image_emb"),
        **_fc("image_loc", f"{m}.image_loc"),
        **_ln("vl_pre_encoder", f"{m}.vl_pre_encoder_layer_norm"),
        **_fc("pooled_fc_text", f"{m}.pooled_fc_text"),
        **_fc("pooled_fc_image", f"{m}.pooled_fc_image"),
    }
    for i in range(cfg.num_hidden_layers):
        table |= _block(f"encoder_layer_{i}", f"{m}.encoder_layer.{i}")
    for j in range(cfg.num_vision_layers):
        table |= _block(f"encoder_vlayer_{j}", f"{m}.encoder_vlayer.{j}")
    for k in range(cfg.num_co_layers):
        table |= _block(f"encoder_colayer_{k}", f"{m}.encoder_colayer.{k}")
        table |= _block(f"encoder_colayer_{k}", f"{m}.encoder_colayer.{k}", vl="vl_")
    return table


# Why a variable of a params directory, or a parameter of ours, was left out by design.
IGNORED_REASON = "not a model parameter (optimiser state, step counter, learning rate)"
HEADS_REASON = "ERNIE-ViL pre-training head, not used for fine-tuning"
RANDOM_REASON = "task head: intentionally random (absent from a pre-trained model)"
EXPECTED = (
    "Expected the params/ folder of the released model-ernie-vil-{base,large}[-VCR-task-pre]-en "
    "tarball for this model size"
)
WAY_OUT = (
    "; if the unexpected variables are heads this model does not use (e.g. the pre-training "
    "heads), list regular expressions for them in the run's `ignore_params` (recipes.toml: "
    "[models.ES.params] ignore_params = ['mask_lm_.*'])"
)


def load_upstream_params(
    model: ErnieVilForHatefulMemes, root: Path, extra_ignored: Iterable[str] = ()
) -> KeyAccount:
    """Copy the variables of `root` into `model`; strict (`hm_shared.key_account.KeyAccount`:
    every variable loaded or left out for a reason), errors name the variables.

    `hm_fc.*` is loaded when present (a vilio fine-tune output) and otherwise reported as the
    intentionally random new head.
    """
    root = Path(root)
    arrays = read_params_dir(root)
    table = rename_table(model.ernie_vil.config) | HEAD
    ignored = [re.compile(p) for p in (*IGNORED, *extra_ignored)]
    heads = [re.compile(p) for p in UPSTREAM_HEADS]
    state = model.state_dict()
    report = KeyAccount(str(root), "ernie-vil")
    for name, array in arrays.items():
        if name not in table:
            if any(p.fullmatch(name) for p in heads):
                report.allowed.append((name, HEADS_REASON))
            elif any(p.fullmatch(name) for p in ignored):
                report.allowed.append((name, IGNORED_REASON))
            else:
                report.unexpected.append(name)
            continue
        target = state[table[name]]
        if tuple(target.shape) != array.shape:
            report.mismatched.append(f"{name} {list(array.shape)} vs {list(target.shape)}")
            continue
        target.set_value(array.astype(np.float32))
        report.loaded.append(name)
    report.missing = sorted(n for n in table if n not in arrays and n not in HEAD)
    report.allowed += [(k, RANDOM_REASON) for k in sorted(HEAD[n] for n in HEAD if n not in arrays)]
    report.raise_for_errors(EXPECTED + (WAY_OUT if report.unexpected else ""))
    return report


def export_upstream_params(model: ErnieVilForHatefulMemes, root: Path) -> list[str]:
    """Write `model`'s parameters as an upstream-format params/ directory; returns the names."""
    state = model.state_dict()
    table = rename_table(model.ernie_vil.config) | HEAD
    for upstream, ours in table.items():
        write_lod_tensor(Path(root) / upstream, state[ours].numpy())
    return sorted(table)


__all__ = [
    "HEAD",
    "IGNORED",
    "UPSTREAM_HEADS",
    "export_upstream_params",
    "load_upstream_params",
    "read_lod_tensor",
    "read_params_dir",
    "rename_table",
    "write_lod_tensor",
]
