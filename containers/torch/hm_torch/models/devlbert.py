"""DeVLBERT (shengyuzhang/DeVLBert) as vilio's model "D": ViLBERT's two streams with co-attention.

Text runs through 12 BERT layers (768 wide) and regions through 6 visual layers (1024 wide); six
co-attention layers (`c_layer`) let each stream attend the other. Each co-layer follows the text
and visual layers named by `t_biattention_id`/`v_biattention_id`, so with the released 6/6 config
the order is text 0–5, co 0, {text 6, visual 0, co 1} … {text 10, visual 4, co 5}, visual 5,
text 11.
Both streams are pooled at token 0 (Linear + ReLU, to `bi_hidden_size`), multiplied, and fed to the
weight-normed `vil_prediction` head of upstream's `DeVLBertForVLTasks` (vilio's `BertD`).

Regions are embedded as `LN(image_embeddings(feature) + image_location_embeddings(box))` with
the box `(x1/W, y1/H, x2/W, y2/H)`; vilio drops the fifth column (relative area) of the released
layer and so do we (`v_pos_dim` 4). DeVLBERT's readers prepend a global region (mean of the real
region features, box [0, 0, 1, 1]) and `v_pooler` reads it; vilio's reader does not, so its
`v_pooler` reads the first detected box (`global_token`).

Checkpoint `pytorch_model_11.bin` (a plain state dict of `BertForMultiModalPreTraining`): every
`bert.*` key loads under the same name. Not loaded, by design:
- `cls.*`: the pre-training heads (masked words, three causal predictors, masked-region classes,
  image-text matching); vilio's `BertD` has none of them.
- `causal_{v,t,t2v,v2t}.*`: the causal-intervention projections (`Wy`, `Wz`, `t2v`, `v2t`) used
  only by DeVLBERT's pre-training losses. Their confounder dictionaries are not in the file.
- `vil_prediction.*` is not in the file and starts random, as in vilio.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from itertools import pairwise
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hm_torch.checkpoints import CheckpointFormat, Pairs, layer_pairs, linear_pairs, slice_columns
from hm_torch.models.family import RegionFamily
from hm_torch.models.layers import (
    BertEmbeddings,
    BertIntermediate,
    BertLayer,
    BertOutput,
    BertSettings,
    extended_attention_mask,
    init_bert_weights,
)
from hm_torch.single_stream import region_entry

_Projections = tuple[nn.Linear, nn.Linear, nn.Linear]  # query, key, value

# DeVLBERT's global region: the whole image, as (x1, y1, x2, y2, area), cut to `v_pos_dim`.
_GLOBAL_BOX = (0.0, 0.0, 1.0, 1.0, 1.0)


@dataclass
class DevlbertConfig(BertSettings):
    """`config/bert_base_6layer_6conect.json` (vilio's `config_bertD.json`) on bert-base-uncased."""

    v_feature_size: int = 2048
    v_hidden_size: int = 1024
    v_num_hidden_layers: int = 6
    v_num_attention_heads: int = 8
    v_intermediate_size: int = 1024  # narrower than the 1024-wide stream's usual 4×
    v_hidden_dropout_prob: float = 0.1
    v_attention_probs_dropout_prob: float = 0.1
    bi_hidden_size: int = 1024
    bi_num_attention_heads: int = 8
    # co-layer k runs once visual layers < v_biattention_id[k] and text < t_biattention_id[k] ran
    v_biattention_id: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4, 5])
    t_biattention_id: list[int] = field(default_factory=lambda: [6, 7, 8, 9, 10, 11])
    v_pos_dim: int = 4  # vilio's --num_pos 4; the released layer takes 5 (+ relative area)
    global_token: bool = True  # DeVLBERT's readers prepend it; vilio's does not
    fusion_dropout_prob: float = 0.1
    num_labels: int = 2

    def __post_init__(self) -> None:
        v_ids, t_ids = self.v_biattention_id, self.t_biattention_id
        if len(v_ids) != len(t_ids):
            raise ValueError(
                f"v_biattention_id {v_ids} and t_biattention_id {t_ids} must have the same "
                "length: one co-attention layer per pair"
            )
        for name, ids, count in (
            ("v_biattention_id", v_ids, self.v_num_hidden_layers),
            ("t_biattention_id", t_ids, self.num_hidden_layers),
        ):
            # equal neighbours are valid upstream (co-layers back to back); decreasing ones would
            # silently skip layers
            if any(i < 0 or i > count for i in ids) or any(a > b for a, b in pairwise(ids)):
                raise ValueError(f"{name} {ids} must be non-decreasing layer indices in 0..{count}")
        if self.v_pos_dim not in (4, 5):
            raise ValueError(f"v_pos_dim is {self.v_pos_dim}; expected 4 (vilio) or 5 (DeVLBERT)")
        for width, heads, what in (
            (self.v_hidden_size, self.v_num_attention_heads, "v_hidden_size"),
            (self.bi_hidden_size, self.bi_num_attention_heads, "bi_hidden_size"),
        ):
            if width % heads:
                raise ValueError(f"{what} {width} is not a multiple of its {heads} heads")

    @classmethod
    def large(cls) -> DevlbertConfig:
        raise ValueError("DeVLBERT was released at BERT-base width only; use size 'base'")

    @classmethod
    def tiny(cls) -> DevlbertConfig:
        return cls(
            vocab_size=100,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            v_hidden_size=32,
            v_num_hidden_layers=2,
            v_num_attention_heads=4,
            v_intermediate_size=48,
            bi_hidden_size=32,
            bi_num_attention_heads=4,
            v_biattention_id=[0, 1],
            t_biattention_id=[1, 2],
        )


def _visual_settings(config: DevlbertConfig) -> BertSettings:
    """The visual stream's layers are BERT layers at the visual sizes."""
    return BertSettings(
        hidden_size=config.v_hidden_size,
        num_hidden_layers=config.v_num_hidden_layers,
        num_attention_heads=config.v_num_attention_heads,
        intermediate_size=config.v_intermediate_size,
        hidden_dropout_prob=config.v_hidden_dropout_prob,
        attention_probs_dropout_prob=config.v_attention_probs_dropout_prob,
        layer_norm_eps=config.layer_norm_eps,
        initializer_range=config.initializer_range,
        attn_implementation=config.attn_implementation,
    )


def _attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, p: float, eager: bool) -> Tensor:
    """Multi-head attention on (B, nh, L, hs) tensors with an additive (B, 1, 1, S) key mask."""
    if not eager:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + mask  # (B, nh, L, S)
    return F.dropout(scores.softmax(dim=-1), p=p) @ v  # (B, nh, L, hs)


class DevlbertImageEmbeddings(nn.Module):
    def __init__(self, config: DevlbertConfig) -> None:
        super().__init__()
        self.image_embeddings = nn.Linear(config.v_feature_size, config.v_hidden_size)
        self.image_location_embeddings = nn.Linear(config.v_pos_dim, config.v_hidden_size)
        self.LayerNorm = nn.LayerNorm(config.v_hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)  # upstream: the text rate, not v_

    def forward(self, img_feats: Tensor, img_pos: Tensor) -> Tensor:
        embedded = self.image_embeddings(img_feats) + self.image_location_embeddings(img_pos)
        return self.dropout(self.LayerNorm(embedded))  # (B, N, Hv)


class DevlbertBiAttention(nn.Module):
    """Text queries attend region keys (`query2`·`key1`, values `value1`) and region queries attend
    text keys (`query1`·`key2`, values `value2`), both at `bi_hidden_size`."""

    def __init__(self, config: DevlbertConfig) -> None:
        super().__init__()
        bi = config.bi_hidden_size
        self.num_heads = config.bi_num_attention_heads
        self.query1 = nn.Linear(config.v_hidden_size, bi)
        self.key1 = nn.Linear(config.v_hidden_size, bi)
        self.value1 = nn.Linear(config.v_hidden_size, bi)
        self.query2 = nn.Linear(config.hidden_size, bi)
        self.key2 = nn.Linear(config.hidden_size, bi)
        self.value2 = nn.Linear(config.hidden_size, bi)
        # upstream's dropout1 (v_ rate) is on the text-over-regions probabilities, dropout2 on the
        # regions-over-text ones
        self.p_text_queries = config.v_attention_probs_dropout_prob
        self.p_region_queries = config.attention_probs_dropout_prob
        self.eager = config.attn_implementation == "eager"

    def _heads(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, -1).transpose(1, 2)  # (B, nh, L, hs)

    def _cross(self, x: Tensor, kv: Tensor, proj: _Projections, mask: Tensor, p: float) -> Tensor:
        query, key, value = proj
        q, k, v = self._heads(query(x)), self._heads(key(kv)), self._heads(value(kv))
        context = _attend(q, k, v, mask, p if self.training else 0.0, self.eager)  # (B, nh, L, hs)
        return context.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)  # (B, L, bi)

    def forward(
        self, vision: Tensor, vision_mask: Tensor, text: Tensor, text_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Returns (region queries' context (B, N, bi), text queries' context (B, T, bi))."""
        to_regions = (self.query2, self.key1, self.value1)
        to_text = (self.query1, self.key2, self.value2)
        text_ctx = self._cross(text, vision, to_regions, vision_mask, self.p_text_queries)
        region_ctx = self._cross(vision, text, to_text, text_mask, self.p_region_queries)
        return region_ctx, text_ctx


class DevlbertBiOutput(nn.Module):
    """Post-LN residual of each stream around its co-attention context (no `q_dense*` layers:
    those are vilbert-multi-task's, commented out in DeVLBERT)."""

    def __init__(self, config: DevlbertConfig) -> None:
        super().__init__()
        eps = config.layer_norm_eps
        self.dense1 = nn.Linear(config.bi_hidden_size, config.v_hidden_size)
        self.LayerNorm1 = nn.LayerNorm(config.v_hidden_size, eps=eps)
        self.dropout1 = nn.Dropout(config.v_hidden_dropout_prob)
        self.dense2 = nn.Linear(config.bi_hidden_size, config.hidden_size)
        self.LayerNorm2 = nn.LayerNorm(config.hidden_size, eps=eps)
        self.dropout2 = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, region_ctx: Tensor, vision: Tensor, text_ctx: Tensor, text: Tensor
    ) -> tuple[Tensor, Tensor]:
        vision = self.LayerNorm1(self.dropout1(self.dense1(region_ctx)) + vision)
        text = self.LayerNorm2(self.dropout2(self.dense2(text_ctx)) + text)
        return vision, text


class DevlbertConnectionLayer(nn.Module):
    """One co-attention layer: cross-attention, then each stream's own feed-forward block (there is
    no self-attention inside)."""

    def __init__(self, config: DevlbertConfig) -> None:
        super().__init__()
        visual = _visual_settings(config)
        self.biattention = DevlbertBiAttention(config)
        self.biOutput = DevlbertBiOutput(config)
        self.v_intermediate = BertIntermediate(visual)
        self.v_output = BertOutput(visual)
        self.t_intermediate = BertIntermediate(config)
        self.t_output = BertOutput(config)

    def forward(
        self, vision: Tensor, vision_mask: Tensor, text: Tensor, text_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        region_ctx, text_ctx = self.biattention(vision, vision_mask, text, text_mask)
        vision, text = self.biOutput(region_ctx, vision, text_ctx, text)
        vision = self.v_output(self.v_intermediate(vision), vision)
        text = self.t_output(self.t_intermediate(text), text)
        return vision, text


class DevlbertEncoder(nn.Module):
    def __init__(self, config: DevlbertConfig) -> None:
        super().__init__()
        visual = _visual_settings(config)
        self.v_ids = tuple(config.v_biattention_id)
        self.t_ids = tuple(config.t_biattention_id)
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))
        self.v_layer = nn.ModuleList(BertLayer(visual) for _ in range(config.v_num_hidden_layers))
        self.c_layer = nn.ModuleList(DevlbertConnectionLayer(config) for _ in self.v_ids)

    def forward(
        self, text: Tensor, text_mask: Tensor, vision: Tensor, vision_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        t_start = v_start = 0
        for co_layer, v_end, t_end in zip(self.c_layer, self.v_ids, self.t_ids, strict=True):
            for layer in self.v_layer[v_start:v_end]:
                vision = layer(vision, vision_mask)
            for layer in self.layer[t_start:t_end]:
                text = layer(text, text_mask)
            vision, text = co_layer(vision, vision_mask, text, text_mask)
            v_start, t_start = v_end, t_end
        for layer in self.v_layer[v_start:]:
            vision = layer(vision, vision_mask)
        for layer in self.layer[t_start:]:
            text = layer(text, text_mask)
        return text, vision


class DevlbertPooler(nn.Module):
    def __init__(self, in_size: int, out_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(in_size, out_size)

    def forward(self, hidden: Tensor) -> Tensor:
        return F.relu(self.dense(hidden[:, 0]))  # (B, bi)


class DevlbertOutput(NamedTuple):
    text: Tensor  # (B, T, H)
    vision: Tensor  # (B, N', Hv); N' = N + 1 with the global region, max(N, 1) without
    vision_mask: Tensor  # (B, N') 1 where a region is attended
    pooled_text: Tensor  # (B, bi)
    pooled_vision: Tensor  # (B, bi)


class DevlbertModel(nn.Module):
    def __init__(self, config: DevlbertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.v_embeddings = DevlbertImageEmbeddings(config)
        self.encoder = DevlbertEncoder(config)
        self.t_pooler = DevlbertPooler(config.hidden_size, config.bi_hidden_size)
        self.v_pooler = DevlbertPooler(config.v_hidden_size, config.bi_hidden_size)

    def _regions(
        self, img_feats: Tensor, img_pos: Tensor, img_mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        real = img_mask.bool()
        # padded regions become zeros, as in upstream's padding: then an image with no regions sees
        # the same thing whatever the padding, and a junk value can never reach the mean
        img_feats = img_feats.masked_fill(~real[..., None], 0.0)
        img_pos = img_pos.masked_fill(~real[..., None], 0.0)
        batch = img_feats.shape[0]
        if self.config.global_token:
            count = real.sum(1, keepdim=True).clamp(min=1).to(img_feats.dtype)  # (B, 1)
            mean = img_feats.sum(1, keepdim=True) / count[..., None]  # (B, 1, F)
            box = img_pos.new_tensor(_GLOBAL_BOX[: self.config.v_pos_dim]).expand(batch, 1, -1)
            img_feats = torch.cat([mean, img_feats], dim=1)  # (B, 1 + N, F)
            img_pos = torch.cat([box, img_pos], dim=1)  # (B, 1 + N, P)
            real = torch.cat([real.new_ones(batch, 1), real], dim=1)  # (B, 1 + N)
        else:
            if img_feats.shape[1] == 0:
                img_feats = img_feats.new_zeros(batch, 1, img_feats.shape[2])
                img_pos = img_pos.new_zeros(batch, 1, img_pos.shape[2])
                real = real.new_zeros(batch, 1)
            # An image without regions attends its first (all-zero) slot. In fp32 this equals
            # attending all its identical zero slots, and no attention row is fully masked, which
            # gives NaN in half precision.
            real = real.clone()
            real[:, 0] |= ~real.any(dim=1)
        return img_feats, img_pos, real

    def forward(
        self,
        input_ids: Tensor,
        text_mask: Tensor,
        img_feats: Tensor,
        img_pos: Tensor,
        img_mask: Tensor,
        token_type_ids: Tensor | None = None,
    ) -> DevlbertOutput:
        """Encode text and regions in two streams joined by co-attention.

        Args:
            input_ids (Tensor[B, T]): word-piece ids, `[CLS] text [SEP]`, padded with 0.
            text_mask (Tensor[B, T]): 1 for real tokens, 0 for padding.
            img_feats (Tensor[B, N, v_feature_size]): region features, real ones first; N may be 0.
            img_pos (Tensor[B, N, v_pos_dim]): boxes (x1/W, y1/H, x2/W, y2/H[, area/(W·H)]).
            img_mask (Tensor[B, N]): 1 for real regions, 0 for padding.
            token_type_ids (Tensor[B, T] | None): segment ids; zeros when None (vilio).

        Returns:
            DevlbertOutput: both sequences, the attended-region mask and the two pooled vectors.
            With `global_token` the global region is prepended at visual position 0.
        """
        img_feats, img_pos, real = self._regions(img_feats, img_pos, img_mask)
        text = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        vision = self.v_embeddings(img_feats, img_pos)  # (B, N', Hv)
        text, vision = self.encoder(
            text,
            extended_attention_mask(text_mask, text.dtype),
            vision,
            extended_attention_mask(real, vision.dtype),
        )
        return DevlbertOutput(
            text, vision, real.to(img_mask.dtype), self.t_pooler(text), self.v_pooler(vision)
        )


class DevlbertWeightNormLinear(nn.Module):
    """`weight_norm(nn.Linear(...), dim=None)` as upstream's head has it: weight = g · v / ‖v‖_F,
    with a 0-d `weight_g`."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight_g = nn.Parameter(torch.empty(()))
        self.weight_v = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))  # nn.Linear's default
        with torch.no_grad():
            self.weight_g.copy_(self.weight_v.norm())  # weight_norm starts at weight = v
        # upstream's BERT init zeroes the bias but misses the weight: weight_norm recomputes it
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_g * self.weight_v / self.weight_v.norm(), self.bias)


class DevlbertClassifier(nn.Module):
    """Upstream's `SimpleClassifier`: keys `main.{0,3}.{weight_g,weight_v,bias}`."""

    def __init__(self, in_size: int, hidden_size: int, num_labels: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            DevlbertWeightNormLinear(in_size, hidden_size),
            nn.ReLU(),
            nn.Dropout(0.5),
            DevlbertWeightNormLinear(hidden_size, num_labels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)  # (B, num_labels)


class DevlbertForHatefulMemes(nn.Module):
    """DeVLBERT + `vil_prediction` on the product of the two pooled vectors (vilio's `BertD`)."""

    def __init__(self, config: DevlbertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = DevlbertModel(config)
        self.dropout = nn.Dropout(config.fusion_dropout_prob)
        bi = config.bi_hidden_size
        self.vil_prediction = DevlbertClassifier(bi, 2 * bi, config.num_labels)
        # BERT init everywhere; the weight-normed head keeps its own (it is no nn.Linear)
        self.apply(partial(init_bert_weights, initializer_range=config.initializer_range))

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Logits (Tensor[B, 2]) from a batch with keys `input_ids`, `text_mask` (Tensor[B, T]),
        optional `token_type_ids` (Tensor[B, T]), `img_feats` (Tensor[B, N, 2048]), `img_pos`
        (Tensor[B, N, 4]: x1/W, y1/H, x2/W, y2/H) and `img_mask` (Tensor[B, N])."""
        out = self.bert(
            batch["input_ids"],
            batch["text_mask"],
            batch["img_feats"],
            batch["img_pos"],
            batch["img_mask"],
            batch.get("token_type_ids"),
        )
        return self.vil_prediction(self.dropout(out.pooled_text * out.pooled_vision))


_IMAGE_EMBEDDING_MODULES = ("image_embeddings", "image_location_embeddings", "LayerNorm")
_CO_LAYER_MODULES = [  # below `bert.encoder.c_layer.{k}.`; each has a weight and a bias
    *(f"biattention.{kind}{side}" for side in (1, 2) for kind in ("query", "key", "value")),
    *(f"biOutput.{kind}{side}" for side in (1, 2) for kind in ("dense", "LayerNorm")),
    *(f"{s}_{m}" for s in "vt" for m in ("intermediate.dense", "output.dense", "output.LayerNorm")),
]


def devlbert_pairs(config: DevlbertConfig) -> Pairs:
    """Every `bert.*` parameter of `BertForMultiModalPreTraining`; the names are ours too."""
    tables = ("word_embeddings", "position_embeddings", "token_type_embeddings")
    keys = [f"bert.embeddings.{table}.weight" for table in tables]
    pairs: Pairs = [(key, key) for key in keys]
    modules = ["embeddings.LayerNorm", "t_pooler.dense", "v_pooler.dense"]
    modules += [f"v_embeddings.{m}" for m in _IMAGE_EMBEDDING_MODULES]
    for k in range(len(config.v_biattention_id)):
        modules += [f"encoder.c_layer.{k}.{m}" for m in _CO_LAYER_MODULES]
    for module in modules:
        pairs += linear_pairs(f"bert.{module}", f"bert.{module}")
    text, visual = "bert.encoder.layer.{i}", "bert.encoder.v_layer.{i}"
    pairs += layer_pairs(text, text, config.num_hidden_layers)
    return pairs + layer_pairs(visual, visual, config.v_num_hidden_layers)


def devlbert_format(config: DevlbertConfig) -> CheckpointFormat:
    """DeVLBERT's released `pytorch_model_11.bin` → `DevlbertForHatefulMemes`."""
    causal = "causal-intervention modules exist only in DeVLBERT pre-training"
    return CheckpointFormat(
        name="devlbert",
        pairs=devlbert_pairs(config),
        allow_missing={"vil_prediction.*": "task head: intentionally random (as vilio)"},
        allow_unexpected={
            "cls.*": "pre-training heads, not used for fine-tuning (vilio drops them)",
            **{f"causal_{name}.*": causal for name in ("v", "t", "t2v", "v2t")},
        },
        # [Hv, 5] → [Hv, 4]: vilio drops the relative-area column
        adapters={"bert.v_embeddings.image_location_embeddings.weight": slice_columns},
    )


def _configure(config: BertSettings, params: Mapping[str, Any], feature_dim: int) -> BertSettings:
    own = {"global_token": bool(params["global_token"])} if "global_token" in params else {}
    return config.replace(v_feature_size=feature_dim, **own)


FAMILY = RegionFamily(
    config=DevlbertConfig,
    model=DevlbertForHatefulMemes,
    pretraining=None,  # vilio fine-tunes D from DeVLBERT's release, no task pre-training
    position="xyxy4",
    configure=_configure,
    checkpoint_format=lambda model, state, source: devlbert_format(model.config),
    model_params=frozenset({"global_token"}),
)

ENTRY = region_entry(FAMILY)

__all__ = [
    "ENTRY",
    "FAMILY",
    "DevlbertConfig",
    "DevlbertForHatefulMemes",
    "DevlbertModel",
    "DevlbertOutput",
    "DevlbertWeightNormLinear",
    "devlbert_format",
    "devlbert_pairs",
]
