"""DeVLBERT (D): the released checkpoint layout loads strictly, parity with a plain-tensor ViLBERT
reference written here, padding invariance, zero regions, the weight-normed head, the config."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

from hm_shared.errors import HmDataError
from hm_torch.checkpoints import load_checkpoint
from hm_torch.models.devlbert import (
    DevlbertConfig,
    DevlbertForHatefulMemes,
    DevlbertModel,
    devlbert_format,
)

Shapes = dict[str, tuple[int, ...]]
LOCATION = "bert.v_embeddings.image_location_embeddings.weight"

# --- the released file's layout, written from upstream devlbert/devlbert.py's module tree ---------

_BERT_LAYER = {  # below `...layer.{i}.`: (out, in) in units of (hidden h, intermediate i)
    "attention.self.query": ("h", "h"),
    "attention.self.key": ("h", "h"),
    "attention.self.value": ("h", "h"),
    "attention.output.dense": ("h", "h"),
    "attention.output.LayerNorm": ("h",),
    "intermediate.dense": ("i", "h"),
    "output.dense": ("h", "i"),
    "output.LayerNorm": ("h",),
}
_CO_LAYER = {  # BertConnectionLayer: t text, v visual, b bi, ti / vi the two intermediates
    "biattention.query1": ("b", "v"),
    "biattention.key1": ("b", "v"),
    "biattention.value1": ("b", "v"),
    "biattention.query2": ("b", "t"),
    "biattention.key2": ("b", "t"),
    "biattention.value2": ("b", "t"),
    "biOutput.dense1": ("v", "b"),
    "biOutput.LayerNorm1": ("v",),
    "biOutput.dense2": ("t", "b"),
    "biOutput.LayerNorm2": ("t",),
    "v_intermediate.dense": ("vi", "v"),
    "v_output.dense": ("v", "vi"),
    "v_output.LayerNorm": ("v",),
    "t_intermediate.dense": ("ti", "t"),
    "t_output.dense": ("t", "ti"),
    "t_output.LayerNorm": ("t",),
}
# cls = BertPreTrainingHeads: three BertLMPredictionHead (768 wide, decoder tied to the word
# embeddings), three BertImagePredictionHead (1024, 2048 = feature size, 1024 wide → 1601 classes)
# and the matching head on the fused pooled vector.
_TEXT_HEADS = ("causal_predictor_t2v", "causal_predictor_t", "predictions")
_IMAGE_HEADS = {"causal_predictor_v2t": "v", "causal_predictor_v": "f", "imagePredictions": "v"}
# Causal_{v,t,t2v,v2t}: projections of the confounder dictionaries (which are not parameters)
_CAUSAL = {
    "causal_v": {"Wy": ("v", "v"), "Wz": ("v", "f")},
    "causal_t": {"Wy": ("t", "t"), "Wz": ("t", "t")},
    "causal_t2v": {"Wy": ("t", "t"), "Wz": ("t", "f"), "t2v": ("t", "f")},
    "causal_v2t": {"Wy": ("v", "v"), "Wz": ("v", "t"), "v2t": ("v", "t")},
}
V_TARGET_SIZE = 1601


def _module(shapes: Shapes, name: str, dims: tuple[int, ...]) -> None:
    """A Linear (out, in) or a LayerNorm (size,): weight and bias."""
    shapes[f"{name}.weight"] = dims
    shapes[f"{name}.bias"] = dims[:1]


def upstream_shapes(cfg: DevlbertConfig) -> Shapes:
    """Every key of `BertForMultiModalPreTraining.state_dict()` with its shape."""
    t, v, b, f = cfg.hidden_size, cfg.v_hidden_size, cfg.bi_hidden_size, cfg.v_feature_size
    size = {
        "t": t,
        "v": v,
        "b": b,
        "f": f,
        "ti": cfg.intermediate_size,
        "vi": cfg.v_intermediate_size,
    }
    s: Shapes = {
        "bert.embeddings.word_embeddings.weight": (cfg.vocab_size, t),
        "bert.embeddings.position_embeddings.weight": (cfg.max_position_embeddings, t),
        "bert.embeddings.token_type_embeddings.weight": (cfg.type_vocab_size, t),
    }
    _module(s, "bert.embeddings.LayerNorm", (t,))
    _module(s, "bert.v_embeddings.image_embeddings", (v, f))
    _module(s, "bert.v_embeddings.image_location_embeddings", (v, 5))  # + relative area
    _module(s, "bert.v_embeddings.LayerNorm", (v,))
    for stream, count, h, i in (
        ("layer", cfg.num_hidden_layers, t, cfg.intermediate_size),
        ("v_layer", cfg.v_num_hidden_layers, v, cfg.v_intermediate_size),
    ):
        for n in range(count):
            for part, dims in _BERT_LAYER.items():
                real = tuple({"h": h, "i": i}[d] for d in dims)
                _module(s, f"bert.encoder.{stream}.{n}.{part}", real)
    for n in range(len(cfg.v_biattention_id)):
        for part, dims in _CO_LAYER.items():
            _module(s, f"bert.encoder.c_layer.{n}.{part}", tuple(size[d] for d in dims))
    _module(s, "bert.t_pooler.dense", (b, t))
    _module(s, "bert.v_pooler.dense", (b, v))
    for head in _TEXT_HEADS:
        _module(s, f"cls.{head}.transform.dense", (t, t))
        _module(s, f"cls.{head}.transform.LayerNorm", (t,))
        s[f"cls.{head}.decoder.weight"] = (cfg.vocab_size, t)
        s[f"cls.{head}.bias"] = (cfg.vocab_size,)
    _module(s, "cls.bi_seq_relationship", (2, b))
    for head, width in _IMAGE_HEADS.items():
        w = size[width]
        _module(s, f"cls.{head}.transform.dense", (w, w))
        _module(s, f"cls.{head}.transform.LayerNorm", (w,))
        _module(s, f"cls.{head}.decoder", (V_TARGET_SIZE, w))
    for module, linears in _CAUSAL.items():
        for name, dims in linears.items():
            _module(s, f"{module}.{name}", tuple(size[d] for d in dims))
    return s


def upstream_state_dict(cfg: DevlbertConfig, seed: int = 0) -> dict[str, Tensor]:
    """Random tensors in the released layout; the three text decoders share the word-embedding
    tensor, as the tied weights do in the real file."""
    g = torch.Generator().manual_seed(seed)
    tied = {f"cls.{head}.decoder.weight" for head in _TEXT_HEADS}
    state = {
        key: torch.empty(shape).normal_(generator=g)
        for key, shape in upstream_shapes(cfg).items()
        if key not in tied
    }
    return state | dict.fromkeys(tied, state["bert.embeddings.word_embeddings.weight"])


UNUSED_GROUPS = {
    "cls.causal_predictor_t2v",
    "cls.causal_predictor_t",
    "cls.predictions",
    "cls.bi_seq_relationship",
    "cls.causal_predictor_v2t",
    "cls.causal_predictor_v",
    "cls.imagePredictions",
    "causal_v",
    "causal_t",
    "causal_t2v",
    "causal_v2t",
}
HEAD_KEYS = {
    f"vil_prediction.main.{i}.{p}" for i in (0, 3) for p in ("weight_g", "weight_v", "bias")
}


def _group(key: str) -> str:
    parts = key.split(".")
    return ".".join(parts[:2]) if parts[0] == "cls" else parts[0]


def test_released_checkpoint_loads_strictly(tmp_path: Path) -> None:
    """Full size, fp32 (≈ 1 GB file, 3.5 GB peak RSS); 10–15 s on 2 cores, so not marked `slow`."""
    cfg = DevlbertConfig.base()
    state = upstream_state_dict(cfg)
    path = tmp_path / "pytorch_model_11.bin"
    torch.save(state, path)
    model = DevlbertForHatefulMemes(cfg)
    report = load_checkpoint(model, path, devlbert_format(cfg))

    backbone = [k for k in state if k.startswith("bert.")]
    assert report.ok and report.format == "devlbert"
    assert len(report.loaded) == len(backbone) == len(model.bert.state_dict())
    allowed = dict(report.allowed)
    unused = {k for k in allowed if not k.startswith("vil_prediction.")}
    assert unused == {k for k in state if not k.startswith("bert.")}
    assert {_group(k) for k in unused} == UNUSED_GROUPS
    assert {k for k in allowed if k.startswith("vil_prediction.")} == HEAD_KEYS
    assert all("pre-training heads" in allowed[k] for k in unused if k.startswith("cls."))
    assert all("causal-intervention" in allowed[k] for k in unused if k.startswith("causal_"))
    assert all("intentionally random" in allowed[k] for k in HEAD_KEYS)

    ours = model.state_dict()
    assert ours[LOCATION].shape == (1024, 4)
    for key in backbone:
        want = state[key][:, :4] if key == LOCATION else state[key]
        assert_close(ours[key], want, rtol=0, atol=0, msg=key)
    batch = _batch(cfg, seed=1)
    assert torch.isfinite(model.eval()(batch)).all()


# --- failure paths (tiny file) ---------------------------------------------------------------


def _tiny_file(tmp_path: Path, edit: Callable[[dict[str, Tensor]], None]) -> Path:
    state = upstream_state_dict(DevlbertConfig.tiny())
    edit(state)
    path = tmp_path / "pytorch_model_11.bin"
    torch.save(state, path)
    return path


def _load_tiny(path: Path, **changes: object) -> DevlbertForHatefulMemes:
    cfg = DevlbertConfig.tiny().replace(**changes)
    model = DevlbertForHatefulMemes(cfg)
    load_checkpoint(model, path, devlbert_format(cfg))
    return model


def test_tiny_file_loads_and_the_5_wide_location_layer_can_be_kept(tmp_path: Path) -> None:
    path = _tiny_file(tmp_path, lambda s: None)
    file = torch.load(path, weights_only=True)
    assert _load_tiny(path).state_dict()[LOCATION].shape == (32, 4)
    whole = _load_tiny(path, v_pos_dim=5).state_dict()[LOCATION]
    assert_close(whole, file[LOCATION], rtol=0, atol=0)


def test_missing_key_fails_naming_it(tmp_path: Path) -> None:
    key = "bert.encoder.c_layer.1.biOutput.LayerNorm2.bias"
    path = _tiny_file(tmp_path, lambda s: s.pop(key))
    with pytest.raises(HmDataError, match=r"missing .*c_layer\.1\.biOutput\.LayerNorm2\.bias"):
        _load_tiny(path)


def test_wrong_shape_fails_naming_it(tmp_path: Path) -> None:
    key = "bert.encoder.c_layer.0.biattention.key2.weight"
    path = _tiny_file(tmp_path, lambda s: s.__setitem__(key, torch.zeros(32, 7)))
    with pytest.raises(HmDataError, match=r"mismatched: .*c_layer\.0\.biattention\.key2"):
        _load_tiny(path)


def test_vilbert_multi_task_extras_are_not_accepted(tmp_path: Path) -> None:
    key = "bert.encoder.c_layer.0.biOutput.q_dense1.weight"  # vilbert-multi-task, not DeVLBERT
    path = _tiny_file(tmp_path, lambda s: s.__setitem__(key, torch.zeros(32, 32)))
    with pytest.raises(HmDataError, match=r"unexpected .*biOutput\.q_dense1\.weight"):
        _load_tiny(path)


# --- forward: an independent plain-tensor reference ---------------------------------------------


def mid_config(**changes: object) -> DevlbertConfig:
    """Unequal text / visual / co-attention widths and head sizes; co-layers 1 and 2 back to back
    on the visual side, and a visual layer left after the last co-layer."""
    cfg = DevlbertConfig(
        vocab_size=90,
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=80,
        max_position_embeddings=40,
        v_feature_size=72,
        v_hidden_size=40,
        v_num_hidden_layers=2,
        v_num_attention_heads=5,
        v_intermediate_size=56,
        bi_hidden_size=24,
        bi_num_attention_heads=3,
        v_biattention_id=[0, 1, 1],
        t_biattention_id=[1, 2, 3],
    )
    return cfg.replace(**changes)


CONFIGS = {"tiny": DevlbertConfig.tiny, "mid": mid_config}


def _batch(cfg: DevlbertConfig, b: int = 3, t: int = 7, n: int = 5, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    text_mask = torch.ones(b, t)
    text_mask[0, 5:] = 0
    img_mask = torch.ones(b, n)
    img_mask[1, 3:] = 0
    img_mask[b - 1, 1:] = 0  # one real region only
    input_ids = torch.randint(1, cfg.vocab_size, (b, t), generator=g) * text_mask.long()
    token_type_ids = torch.randint(0, 2, (b, t), generator=g) * text_mask.long()
    feats = torch.rand(b, n, cfg.v_feature_size, generator=g)
    junk = 50 * torch.randn(b, n, cfg.v_feature_size, generator=g)  # padding: must be invisible
    return {
        "input_ids": input_ids,
        "text_mask": text_mask,
        "token_type_ids": token_type_ids,
        "img_feats": torch.where(img_mask.bool()[..., None], feats, junk),
        "img_pos": torch.rand(b, n, cfg.v_pos_dim, generator=g),
        "img_mask": img_mask,
    }


def _randomised(cfg: DevlbertConfig, seed: int = 0) -> DevlbertForHatefulMemes:
    """Every parameter away from its init (LayerNorms, biases, g included), so each one matters;
    matrices at 1/√fan-in so that the examples stay apart through the layers."""
    torch.manual_seed(seed)
    model = DevlbertForHatefulMemes(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2:
                p.normal_(0, p.shape[1] ** -0.5)
            else:
                p.normal_(0, 0.2)
            if "LayerNorm" in name and name.endswith("weight"):
                p.add_(1.0)
        for layer in (model.vil_prediction.main[0], model.vil_prediction.main[3]):
            # ‖weight‖ = |g|: keep it near ‖v‖ (entries ~0.2), and ≠ ‖v‖ so that g matters
            layer.weight_g.copy_(0.7 * layer.weight_v.norm())
    return model


def reference_logits(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """ViLBERT's equations over the state dict, with DeVLBERT's layer order and masks."""
    cfg = model.config
    sd = {k: v.detach() for k, v in model.state_dict().items()}

    def lin(x: Tensor, name: str) -> Tensor:
        return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]

    def norm(x: Tensor, name: str) -> Tensor:
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + 1e-12) * sd[f"{name}.weight"] + sd[f"{name}.bias"]

    def gelu(x: Tensor) -> Tensor:
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))

    def attention(xq: Tensor, xkv: Tensor, names: tuple[str, str, str], heads: int, keys: Tensor):
        def split(x: Tensor) -> Tensor:
            return x.reshape(x.shape[0], x.shape[1], heads, -1).permute(0, 2, 1, 3)

        q, k, v = split(lin(xq, names[0])), split(lin(xkv, names[1])), split(lin(xkv, names[2]))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        scores = scores + (1 - keys.float())[:, None, None, :] * -10000.0
        out = scores.softmax(-1) @ v
        return out.permute(0, 2, 1, 3).reshape(xq.shape[0], xq.shape[1], -1)

    def ffn(x: Tensor, p: str, inter: str, out: str) -> Tensor:
        hidden = gelu(lin(x, f"{p}.{inter}.dense"))
        return norm(lin(hidden, f"{p}.{out}.dense") + x, f"{p}.{out}.LayerNorm")

    def bert_layer(x: Tensor, keys: Tensor, p: str, heads: int) -> Tensor:
        qkv = tuple(f"{p}.attention.self.{n}" for n in ("query", "key", "value"))
        a = attention(x, x, qkv, heads, keys)
        x = norm(lin(a, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
        return ffn(x, p, "intermediate", "output")

    ids, text_mask = batch["input_ids"], batch["text_mask"]
    feats, boxes, img_mask = batch["img_feats"], batch["img_pos"], batch["img_mask"]
    e = "bert.embeddings"
    words = sd[f"{e}.word_embeddings.weight"][ids]
    places = sd[f"{e}.position_embeddings.weight"][torch.arange(ids.shape[1])]
    kinds = sd[f"{e}.token_type_embeddings.weight"][batch["token_type_ids"]]
    text = norm(words + places + kinds, f"{e}.LayerNorm")
    if cfg.global_token:  # mean of each image's real regions, box = whole image
        means = torch.stack([f[m.bool()].mean(0) for f, m in zip(feats, img_mask, strict=True)])
        whole = torch.tensor([0.0, 0.0, 1.0, 1.0]).expand(len(ids), 1, 4)
        feats = torch.cat([means[:, None], feats], 1)
        boxes = torch.cat([whole, boxes], 1)
        img_mask = torch.cat([torch.ones(len(ids), 1), img_mask], 1)
    v = "bert.v_embeddings"
    embedded = lin(feats, f"{v}.image_embeddings") + lin(boxes, f"{v}.image_location_embeddings")
    vision = norm(embedded, f"{v}.LayerNorm")

    t_done = v_done = 0
    for k, (v_end, t_end) in enumerate(
        zip(cfg.v_biattention_id, cfg.t_biattention_id, strict=True)
    ):
        for i in range(v_done, v_end):
            vision = bert_layer(
                vision, img_mask, f"bert.encoder.v_layer.{i}", cfg.v_num_attention_heads
            )
        for i in range(t_done, t_end):
            text = bert_layer(text, text_mask, f"bert.encoder.layer.{i}", cfg.num_attention_heads)
        c = f"bert.encoder.c_layer.{k}"
        heads = cfg.bi_num_attention_heads
        text_queries = (
            f"{c}.biattention.query2",
            f"{c}.biattention.key1",
            f"{c}.biattention.value1",
        )
        region_queries = (
            f"{c}.biattention.query1",
            f"{c}.biattention.key2",
            f"{c}.biattention.value2",
        )
        text_ctx = attention(text, vision, text_queries, heads, img_mask)
        region_ctx = attention(vision, text, region_queries, heads, text_mask)
        vision = norm(lin(region_ctx, f"{c}.biOutput.dense1") + vision, f"{c}.biOutput.LayerNorm1")
        text = norm(lin(text_ctx, f"{c}.biOutput.dense2") + text, f"{c}.biOutput.LayerNorm2")
        vision = ffn(vision, c, "v_intermediate", "v_output")
        text = ffn(text, c, "t_intermediate", "t_output")
        v_done, t_done = v_end, t_end
    for i in range(v_done, cfg.v_num_hidden_layers):
        vision = bert_layer(
            vision, img_mask, f"bert.encoder.v_layer.{i}", cfg.v_num_attention_heads
        )
    for i in range(t_done, cfg.num_hidden_layers):
        text = bert_layer(text, text_mask, f"bert.encoder.layer.{i}", cfg.num_attention_heads)

    fused = torch.relu(lin(text[:, 0], "bert.t_pooler.dense")) * torch.relu(
        lin(vision[:, 0], "bert.v_pooler.dense")
    )

    def weight_normed(x: Tensor, name: str) -> Tensor:
        g, direction = sd[f"{name}.weight_g"], sd[f"{name}.weight_v"]
        weight = g * direction / direction.pow(2).sum().sqrt()
        return x @ weight.T + sd[f"{name}.bias"]

    hidden = torch.relu(weighted := weight_normed(fused, "vil_prediction.main.0"))
    assert weighted.shape[-1] == 2 * cfg.bi_hidden_size
    return weight_normed(hidden, "vil_prediction.main.3")


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("global_token", [True, False], ids=["global", "vilio"])
@pytest.mark.parametrize("size", ["tiny", "mid"])
def test_forward_equals_the_reference(size: str, global_token: bool, attn: str) -> None:
    cfg = CONFIGS[size]().replace(global_token=global_token, attn_implementation=attn)
    model = _randomised(cfg)
    batch = _batch(cfg)
    with torch.no_grad():
        ours, ref = model(batch), reference_logits(model, batch)
    assert ours.shape == (3, 2)
    assert (ref - ref[0]).abs().max() > 0.01  # the examples differ: not a degenerate comparison
    assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("global_token", [True, False], ids=["global", "vilio"])
@pytest.mark.parametrize("size", ["tiny", "mid"])
def test_padding_does_not_move_the_logits(size: str, global_token: bool) -> None:
    cfg = CONFIGS[size]().replace(global_token=global_token)
    model = _randomised(cfg, seed=1)
    batch = _batch(cfg)
    b, pad, extra = 3, 4, 3
    padded = dict(batch)
    padded["img_feats"] = torch.cat(
        [batch["img_feats"], 1e3 * torch.randn(b, pad, cfg.v_feature_size)], 1
    )
    padded["img_pos"] = torch.cat([batch["img_pos"], torch.rand(b, pad, 4)], 1)
    padded["img_mask"] = torch.cat([batch["img_mask"], torch.zeros(b, pad)], 1)
    for key in ("input_ids", "token_type_ids"):
        padded[key] = torch.cat([batch[key], torch.randint(1, 2, (b, extra))], 1)
    padded["text_mask"] = torch.cat([batch["text_mask"], torch.zeros(b, extra)], 1)
    with torch.no_grad():
        assert_close(model(padded), model(batch), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("global_token", [True, False], ids=["global", "vilio"])
def test_regions_change_the_output(global_token: bool) -> None:
    cfg = DevlbertConfig.tiny().replace(global_token=global_token)
    model = _randomised(cfg)
    batch = _batch(cfg)
    other = dict(batch, img_feats=torch.rand_like(batch["img_feats"]))
    with torch.no_grad():
        assert (model(batch) - model(other)).abs().min() > 1e-4


@pytest.mark.parametrize("global_token", [True, False], ids=["global", "vilio"])
def test_zero_regions(global_token: bool) -> None:
    cfg = DevlbertConfig.tiny().replace(global_token=global_token)
    model = _randomised(cfg)
    batch = _batch(cfg, n=0)
    with torch.no_grad():
        logits = model(batch)
        out = model.bert(
            batch["input_ids"],
            batch["text_mask"],
            batch["img_feats"],
            batch["img_pos"],
            batch["img_mask"],
        )
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()
    assert out.vision.shape == (3, 1, cfg.v_hidden_size)
    # one slot is attended (the global region, or vilio's all-zero slot): no attention row is
    # fully masked, which some half-precision kernels turn into NaN or zeros
    assert out.vision_mask.tolist() == [[1.0]] * 3
    # an image without regions inside a padded batch gives what it gives alone
    padded = _batch(cfg, n=4)
    padded["img_mask"][0] = 0
    alone = {k: v[:1] for k, v in batch.items()}
    with torch.no_grad():
        assert_close(model(padded)[:1], model(alone), atol=1e-5, rtol=1e-5)
        kept = model.bert(**{k: v for k, v in padded.items() if k != "token_type_ids"})
    assert kept.vision_mask[0].sum() == 1


def test_output_shapes() -> None:
    cfg = mid_config()
    batch = _batch(cfg)
    out = DevlbertModel(cfg)(
        batch["input_ids"],
        batch["text_mask"],
        batch["img_feats"],
        batch["img_pos"],
        batch["img_mask"],
    )
    assert out.text.shape == (3, 7, 48)
    assert out.vision.shape == (3, 1 + 5, 40)
    assert out.vision_mask.tolist()[1] == [1, 1, 1, 1, 0, 0]
    assert out.pooled_text.shape == out.pooled_vision.shape == (3, 24)
    vilio = DevlbertModel(cfg.replace(global_token=False))
    assert vilio(**{k: v for k, v in batch.items() if k != "token_type_ids"}).vision.shape == (
        3,
        5,
        40,
    )


def test_layer_order_follows_the_biattention_ids() -> None:
    cfg = DevlbertConfig.tiny().replace(
        num_hidden_layers=12,
        v_num_hidden_layers=6,
        v_biattention_id=[0, 1, 2, 3, 4, 5],
        t_biattention_id=[6, 7, 8, 9, 10, 11],
    )
    model = DevlbertModel(cfg).eval()
    order: list[str] = []
    for stream, tag in (("layer", "t"), ("v_layer", "v"), ("c_layer", "c")):
        for i, layer in enumerate(getattr(model.encoder, stream)):
            layer.register_forward_hook(lambda *_, name=f"{tag}{i}": order.append(name))
    model(**{k: v for k, v in _batch(cfg).items() if k != "token_type_ids"})
    expected = [f"t{i}" for i in range(6)] + ["c0"]
    for k in range(1, 6):
        expected += [f"v{k - 1}", f"t{k + 5}", f"c{k}"]
    assert order == [*expected, "v5", "t11"]


# --- the head, the init, autocast ------------------------------------------------------------


def test_head_is_upstreams_weight_normed_classifier() -> None:
    cfg = DevlbertConfig.tiny()
    model = DevlbertForHatefulMemes(cfg)
    head = model.vil_prediction.state_dict()
    assert {f"vil_prediction.{k}" for k in head} == HEAD_KEYS
    assert head["main.0.weight_g"].shape == () and head["main.0.weight_v"].shape == (64, 32)
    assert head["main.3.weight_v"].shape == (2, 64)
    for i in (0, 3):  # weight_norm starts at weight = v; upstream's BERT init zeroes the bias
        assert_close(head[f"main.{i}.weight_g"], head[f"main.{i}.weight_v"].norm())
        assert not head[f"main.{i}.bias"].any()
    with torch.no_grad():
        for p in model.vil_prediction.parameters():
            p.normal_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the API upstream used
        torch_layer = torch.nn.utils.weight_norm(nn.Linear(32, 64), dim=None)
    with torch.no_grad():
        torch_layer.weight_g.copy_(model.vil_prediction.main[0].weight_g)
        torch_layer.weight_v.copy_(model.vil_prediction.main[0].weight_v)
        torch_layer.bias.copy_(model.vil_prediction.main[0].bias)
        x = torch.randn(5, 32)
        assert_close(model.vil_prediction.main[0](x), torch_layer(x))


def test_backbone_gets_bert_init() -> None:
    torch.manual_seed(0)
    model = DevlbertForHatefulMemes(mid_config())
    weight = model.bert.encoder.c_layer[0].biattention.query1.weight
    assert abs(weight.std().item() - 0.02) < 0.003
    assert not model.bert.encoder.c_layer[0].biattention.query1.bias.any()
    assert (model.bert.encoder.c_layer[0].biOutput.LayerNorm1.weight == 1).all()


def test_bf16_autocast_with_an_image_without_regions() -> None:
    cfg = DevlbertConfig.tiny().replace(global_token=False)
    model = _randomised(cfg)
    batch = _batch(cfg)
    batch["img_mask"][0] = 0  # every key of this image is padding
    reference = model(batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(batch)
        nn.functional.cross_entropy(logits.float(), torch.tensor([0, 1, 0])).backward()
    assert logits.dtype == torch.bfloat16
    assert torch.isfinite(logits.float()).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert_close(logits.float(), reference, rtol=0.05, atol=0.05)


# --- config --------------------------------------------------------------------------------------


def test_sizes() -> None:
    tiny = DevlbertConfig.tiny()
    assert max(tiny.hidden_size, tiny.v_hidden_size, tiny.bi_hidden_size) <= 40
    assert (tiny.num_hidden_layers, tiny.v_num_hidden_layers, tiny.vocab_size) == (2, 2, 100)
    base = DevlbertConfig.base()
    assert (base.hidden_size, base.num_hidden_layers, base.vocab_size) == (768, 12, 30522)
    assert (base.v_hidden_size, base.v_num_hidden_layers, base.v_intermediate_size) == (
        1024,
        6,
        1024,
    )
    assert (base.bi_hidden_size, base.bi_num_attention_heads, base.v_pos_dim) == (1024, 8, 4)
    assert base.v_biattention_id == [0, 1, 2, 3, 4, 5]
    assert base.t_biattention_id == [6, 7, 8, 9, 10, 11]
    with pytest.raises(ValueError, match="base width only"):
        DevlbertConfig.large()


def test_config_round_trips_through_json() -> None:
    cfg = mid_config(global_token=False)
    again = DevlbertConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.v_biattention_id == [0, 1, 1]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"v_biattention_id": [0, 1, 2]}, "same length"),
        ({"t_biattention_id": [6, 7, 8, 9, 10, 13]}, r"t_biattention_id .* 0\.\.12"),
        ({"v_biattention_id": [0, 1, 3, 2, 4, 5]}, "non-decreasing"),
        ({"v_biattention_id": [-1, 1, 2, 3, 4, 5]}, "non-decreasing"),
        ({"v_pos_dim": 7}, "v_pos_dim"),
        ({"bi_num_attention_heads": 7}, "bi_hidden_size"),
    ],
)
def test_invalid_configs_fail_clearly(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DevlbertConfig(**changes)
