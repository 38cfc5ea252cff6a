"""LXMERT (airsplay/lxmert `LXRTModel`) as vilio's model "X": a two-stream encoder.

Text runs through `l_layers` BERT layers, regions through `r_layers`, then `x_layers` cross-modality
layers: one shared cross-attention (`visual_attention`) applied text←regions and regions←text,
then per-stream self-attention and feed-forward. Attribute names follow the released
`EpochNN_LXRT.pth` files below `bert.` (an `nn.DataParallel` state dict, `module.bert.*`), which are
also transformers' `LxmertModel` names. vilio fine-tunes `lxr1252_bertinit/Epoch18_LXRT.pth`:
12 language, 5 cross, 2 region layers at BERT-base width (`base()`); the original release is
9/5/5 (`original()`, or the recipe's `l_layers`/`x_layers`/`r_layers`).

Regions enter as `(LN(visn_fc(feature)) + LN(box_fc(x1/W, y1/H, x2/W, y2/H))) / 2` with no type
or position embedding. The HM head is vilio's (`classifier.{0,2,3}`) on the tanh pooler of text
token 0.

Checkpoint (after `module.` is stripped): `bert.*` loads; task pre-training also loads BERT's
`cls.*` heads (its matching head stays untrained: vilio's `pretrain_bertX.py` runs the masked-word
objective only, `--taskMaskLM`, with region features masked as input noise and no loss on them).
`obj_predict_head.*` (object / attribute / feature regression) is unused for the same reason, and
`answer_head.*` (the VQA/GQA answer table) is dropped as vilio's `loadpre` does. Fine-tuning
loads `bert.*` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

from torch import Tensor, nn

from hm_torch.checkpoints import (
    HEAD_RANDOM,
    TIED,
    CheckpointFormat,
    bert_pairs,
    layer_pairs,
    linear_pairs,
    pretraining_head_pairs,
)
from hm_torch.models.family import RegionFamily
from hm_torch.models.layers import (
    BertAttention,
    BertEmbeddings,
    BertIntermediate,
    BertLayer,
    BertOutput,
    BertPooler,
    BertPreTrainingHeads,
    BertSelfAttention,
    BertSelfOutput,
    BertSettings,
    classifier_head,
    extended_attention_mask,
    init_bert_weights,
)
from hm_torch.single_stream import region_entry


@dataclass
class LxmertConfig(BertSettings):
    """bert-base-uncased text side; layer counts of vilio's `lxr1252_bertinit` checkpoint."""

    l_layers: int = 12
    x_layers: int = 5
    r_layers: int = 2
    visual_feat_dim: int = 2048
    visual_pos_dim: int = 4  # x1/W, y1/H, x2/W, y2/H (the two corners, not x, y, w, h)
    num_labels: int = 2

    @classmethod
    def original(cls) -> LxmertConfig:
        """The 9/5/5 layers of LXMERT's own release (`model_LXRT.pth`, `lxmert20/…`)."""
        return cls(l_layers=9, x_layers=5, r_layers=5)

    @classmethod
    def large(cls) -> LxmertConfig:
        raise ValueError("LXMERT was released at BERT-base width only; use size 'base'")

    @classmethod
    def tiny(cls) -> LxmertConfig:
        return super().tiny().replace(l_layers=2, x_layers=1, r_layers=1)


class LxmertVisualFeatureEncoder(nn.Module):
    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        self.visn_fc = nn.Linear(config.visual_feat_dim, config.hidden_size)
        self.visn_layer_norm = nn.LayerNorm(config.hidden_size, eps=1e-12)
        self.box_fc = nn.Linear(config.visual_pos_dim, config.hidden_size)
        self.box_layer_norm = nn.LayerNorm(config.hidden_size, eps=1e-12)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, feats: Tensor, boxes: Tensor) -> Tensor:
        x = self.visn_layer_norm(self.visn_fc(feats))  # (B, N, H)
        y = self.box_layer_norm(self.box_fc(boxes))  # (B, N, H)
        return self.dropout((x + y) / 2)


class LxmertCrossAttention(nn.Module):
    """`visual_attention`: `att` (query from one stream, key/value from the other) + `output`."""

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        self.att = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, hidden: Tensor, context: Tensor, context_mask: Tensor) -> Tensor:
        return self.output(self.att(hidden, context_mask, context=context), hidden)


class LxmertXLayer(nn.Module):
    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        self.visual_attention = LxmertCrossAttention(config)  # one module, both directions
        self.lang_self_att = BertAttention(config)
        self.visn_self_att = BertAttention(config)
        self.lang_inter = BertIntermediate(config)
        self.lang_output = BertOutput(config)
        self.visn_inter = BertIntermediate(config)
        self.visn_output = BertOutput(config)

    def forward(
        self, lang: Tensor, lang_mask: Tensor, visn: Tensor, visn_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        lang_att = self.visual_attention(lang, visn, visn_mask)
        visn_att = self.visual_attention(visn, lang, lang_mask)
        lang_att = self.lang_self_att(lang_att, lang_mask)
        visn_att = self.visn_self_att(visn_att, visn_mask)
        lang_out = self.lang_output(self.lang_inter(lang_att), lang_att)
        visn_out = self.visn_output(self.visn_inter(visn_att), visn_att)
        return lang_out, visn_out


class LxmertEncoder(nn.Module):
    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        self.visn_fc = LxmertVisualFeatureEncoder(config)
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.l_layers))
        self.x_layers = nn.ModuleList(LxmertXLayer(config) for _ in range(config.x_layers))
        self.r_layers = nn.ModuleList(BertLayer(config) for _ in range(config.r_layers))

    def forward(
        self, lang: Tensor, lang_mask: Tensor, feats: Tensor, boxes: Tensor, visn_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        visn = self.visn_fc(feats, boxes)
        for layer in self.layer:
            lang = layer(lang, lang_mask)
        for layer in self.r_layers:
            visn = layer(visn, visn_mask)
        for layer in self.x_layers:
            lang, visn = layer(lang, lang_mask, visn, visn_mask)
        return lang, visn


class LxmertOutput(NamedTuple):
    language: Tensor  # (B, T, H)
    vision: Tensor  # (B, N, H)
    pooled: Tensor  # (B, H)


class LxmertModel(nn.Module):
    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = LxmertEncoder(config)
        self.pooler = BertPooler(config)

    def forward(
        self,
        input_ids: Tensor,
        text_mask: Tensor,
        img_feats: Tensor,
        img_pos: Tensor,
        img_mask: Tensor,
        token_type_ids: Tensor | None = None,
    ) -> LxmertOutput:
        """Encode text and regions in two streams that meet in the cross-modality layers.

        Args:
            input_ids (Tensor[B, T]): `[CLS] text [SEP]`, padded with 0.
            text_mask (Tensor[B, T]): 1 for real tokens, 0 for padding.
            img_feats (Tensor[B, N, visual_feat_dim]): region features; N may be 0.
            img_pos (Tensor[B, N, 4]): boxes as (x1/W, y1/H, x2/W, y2/H).
            img_mask (Tensor[B, N]): 1 for real regions, 0 for padding.
            token_type_ids (Tensor[B, T] | None): zeros if None (vilio's segment ids).

        Returns:
            LxmertOutput: `language` (Tensor[B, T, H]), `vision` (Tensor[B, max(N, 1), H]) and
            `pooled` (Tensor[B, H]).
        """
        if img_feats.shape[1] == 0:  # no regions (text-only ablation): one masked zero region
            batch = img_feats.shape[0]
            img_feats = img_feats.new_zeros(batch, 1, img_feats.shape[2])
            img_pos = img_pos.new_zeros(batch, 1, img_pos.shape[2])
            img_mask = img_mask.new_zeros(batch, 1)
        lang = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        lang_mask = extended_attention_mask(text_mask, lang.dtype)  # (B, 1, 1, T)
        visn_mask = extended_attention_mask(img_mask, lang.dtype)  # (B, 1, 1, N)
        lang, visn = self.encoder(lang, lang_mask, img_feats, img_pos, visn_mask)
        return LxmertOutput(lang, visn, self.pooler(lang))


def _encode(bert: LxmertModel, batch: Mapping[str, Tensor]) -> LxmertOutput:
    return bert(
        batch["input_ids"],
        batch["text_mask"],
        batch["img_feats"],
        batch["img_pos"],
        batch["img_mask"],
        batch.get("token_type_ids"),
    )


class LxmertForHatefulMemes(nn.Module):
    """LXMERT + vilio's head (Linear(H,2H) → GeLU → LayerNorm → Linear(2H,2)) on the pooler."""

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = LxmertModel(config)
        self.classifier = classifier_head(config.hidden_size, config.num_labels)
        self.apply(partial(init_bert_weights, initializer_range=config.initializer_range))

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Logits (Tensor[B, 2]) from a `hm_torch.regions` batch (`input_ids`, `text_mask`
        (Tensor[B, T]), `img_feats` (Tensor[B, N, 2048]), `img_pos` (Tensor[B, N, 4]), `img_mask`
        (Tensor[B, N]))."""
        return self.classifier(_encode(self.bert, batch).pooled)


class LxmertForPretraining(nn.Module):
    """LXMERT + BERT's `cls` heads: masked words over the text stream (and, if enabled, matching
    from the pooler), as vilio's `pretrain_bertX.py`."""

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = LxmertModel(config)
        self.cls = BertPreTrainingHeads(config, self.bert.embeddings.word_embeddings)
        self.apply(partial(init_bert_weights, initializer_range=config.initializer_range))

    def forward(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(word logits (Tensor[B, T, vocab]), matching logits (Tensor[B, 2]))."""
        out = _encode(self.bert, batch)
        return self.cls(out.language, out.pooled)


_MLM_ONLY = "LXMERT pre-training head that vilio's MLM-only task pre-training does not use"


def lxmert_pairs(config: LxmertConfig) -> list[tuple[str, str]]:
    """Every backbone parameter, `bert.*` in the file → `bert.*` here."""
    pairs = bert_pairs("bert.", "bert.", config.l_layers)
    pairs += layer_pairs("bert.encoder.r_layers.{i}", "bert.encoder.r_layers.{i}", config.r_layers)
    for module in ("visn_fc", "visn_layer_norm", "box_fc", "box_layer_norm"):
        pairs += linear_pairs(f"bert.encoder.visn_fc.{module}", f"bert.encoder.visn_fc.{module}")
    cross = [
        "visual_attention.att.query",
        "visual_attention.att.key",
        "visual_attention.att.value",
        "visual_attention.output.dense",
        "visual_attention.output.LayerNorm",
    ]
    for stream in ("lang", "visn"):
        cross += [
            f"{stream}_self_att.self.query",
            f"{stream}_self_att.self.key",
            f"{stream}_self_att.self.value",
            f"{stream}_self_att.output.dense",
            f"{stream}_self_att.output.LayerNorm",
            f"{stream}_inter.dense",
            f"{stream}_output.dense",
            f"{stream}_output.LayerNorm",
        ]
    for i in range(config.x_layers):
        for module in cross:
            name = f"bert.encoder.x_layers.{i}.{module}"
            pairs += linear_pairs(name, name)
    return pairs


def lxmert_format(
    model: nn.Module, state: Mapping[str, Tensor] | None = None, source: str = ""
) -> CheckpointFormat:
    """`EpochNN_LXRT.pth` (and vilio's task-pretrained `LAST_BX.pth`) → `LxmertFor{HatefulMemes,
    Pretraining}`."""
    config = model.config
    pairs = lxmert_pairs(config)
    unexpected = {
        "obj_predict_head.*": _MLM_ONLY,
        "answer_head.*": "VQA/GQA answer head, dropped as vilio's loadpre does",
    }
    if isinstance(model, LxmertForPretraining):
        pairs += pretraining_head_pairs("cls.", "cls.")
        unexpected["cls.predictions.decoder.weight"] = TIED
        missing = {"cls.*": "pre-training heads absent from the file are initialised randomly"}
    else:
        unexpected["cls.*"] = "pre-training heads, not used for fine-tuning"
        missing = {"classifier.*": HEAD_RANDOM}
    return CheckpointFormat(
        name="lxmert", pairs=pairs, allow_missing=missing, allow_unexpected=unexpected
    )


def _configure(config: BertSettings, params: Mapping[str, Any], feature_dim: int) -> BertSettings:
    layers = {k: int(params[k]) for k in ("l_layers", "x_layers", "r_layers") if k in params}
    return config.replace(visual_feat_dim=feature_dim, **layers)


FAMILY = RegionFamily(
    config=LxmertConfig,
    model=LxmertForHatefulMemes,
    pretraining=LxmertForPretraining,
    position="xyxy4",
    configure=_configure,
    checkpoint_format=lxmert_format,
    model_params=frozenset({"l_layers", "x_layers", "r_layers"}),
)

ENTRY = region_entry(FAMILY)

__all__ = [
    "ENTRY",
    "FAMILY",
    "LxmertConfig",
    "LxmertCrossAttention",
    "LxmertEncoder",
    "LxmertForHatefulMemes",
    "LxmertForPretraining",
    "LxmertModel",
    "LxmertOutput",
    "LxmertVisualFeatureEncoder",
    "LxmertXLayer",
    "lxmert_format",
    "lxmert_pairs",
]
