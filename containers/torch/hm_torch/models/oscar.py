"""OSCAR (microsoft/Oscar `BertImgModel`) as vilio's model "O".

Attribute names follow the released `pytorch_model.bin` (`bert.*`, `bert.img_embedding.*`) and
vilio's task-pretrained `LAST_BO.pth` (`bert.*`, `cls.*`). Each region enters as
[feature ‖ box position] through one linear layer and gets no position or type embedding.
`pos_dim` 4 is vilio's input (x1/W, y1/H, x2/W, y2/H → 2052 wide); 6 is the released checkpoint's
2054-wide layer (the 4 corners, then w/W and h/H; that order is the Oscar authors' answer in
issue #23 and is not confirmed by code).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from hm_torch.checkpoints import (
    HEAD_RANDOM,
    TIED,
    CheckpointFormat,
    bert_pairs,
    linear_pairs,
    pretraining_head_pairs,
    slice_columns,
)
from hm_torch.models.family import RegionFamily
from hm_torch.models.layers import (
    BertEmbeddings,
    BertEncoder,
    BertPooler,
    BertPreTrainingHeads,
    BertSettings,
    EncoderOutput,
    classifier_head,
    extended_attention_mask,
    init_bert_weights,
)
from hm_torch.single_stream import region_entry


@dataclass
class OscarConfig(BertSettings):
    hidden_dropout_prob: float = 0.3  # vilio forces 0.3 (Oscar's model zoo --drop_out)
    feature_dim: int = 2048
    pos_dim: int = 4  # 4: vilio's 2052-wide input; 6: the released 2054-wide layer
    use_img_layernorm: bool = False  # vilio's BertO has none
    img_layer_norm_eps: float = 1e-12
    num_labels: int = 2

    @property
    def img_feature_dim(self) -> int:
        return self.feature_dim + self.pos_dim

    @classmethod
    def tiny(cls) -> OscarConfig:
        return super().tiny().replace(hidden_dropout_prob=0.1)  # 0.3 is too much for a tiny net


class OscarModel(nn.Module):
    def __init__(self, config: OscarConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.img_embedding = nn.Linear(config.img_feature_dim, config.hidden_size)
        if config.use_img_layernorm:
            self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.img_layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config)

    def forward(
        self,
        input_ids: Tensor,
        text_mask: Tensor,
        img_feats: Tensor,
        img_pos: Tensor,
        img_mask: Tensor,
        token_type_ids: Tensor | None = None,
    ) -> EncoderOutput:
        """Encode text (optionally followed by object tags) and regions as one sequence.

        Args:
            input_ids (Tensor[B, T]): `[CLS] text [SEP]` (+ `tags [SEP]`), padded with 0.
            text_mask (Tensor[B, T]): 1 for real tokens, 0 for padding.
            img_feats (Tensor[B, N, 2048]): region features; N may be 0.
            img_pos (Tensor[B, N, pos_dim]): boxes (x1/W, y1/H, x2/W, y2/H[, w/W, h/H]).
            img_mask (Tensor[B, N]): 1 for real regions, 0 for padding.
            token_type_ids (Tensor[B, T] | None): 0 for the text, 1 for the tags; zeros if None.

        Returns:
            EncoderOutput with `sequence` (Tensor[B, T + N, H]), text first, then regions.
        """
        text = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        regions = self.img_embedding(torch.cat([img_feats, img_pos], dim=-1))  # (B, N, H)
        if self.config.use_img_layernorm:
            regions = self.LayerNorm(regions)
        hidden = torch.cat([text, self.dropout(regions)], dim=1)  # (B, T + N, H)
        mask = torch.cat([text_mask, img_mask], dim=1)  # (B, T + N)
        states = self.encoder(hidden, extended_attention_mask(mask, hidden.dtype))
        return EncoderOutput(states[-1], self.pooler(states[-1]), states)


class OscarForHatefulMemes(nn.Module):
    """OSCAR + vilio's head (Linear(H,2H) → GeLU → LayerNorm → Linear(2H,2)); reads the pooler."""

    def __init__(self, config: OscarConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = OscarModel(config)
        self.classifier = classifier_head(config.hidden_size, config.num_labels)
        self.apply(partial(init_bert_weights, initializer_range=config.initializer_range))

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Logits (Tensor[B, 2]) from a batch of `hm_torch.regions` with keys `input_ids`,
        `text_mask`, `token_type_ids` (Tensor[B, T]), `img_feats` (Tensor[B, N, 2048]),
        `img_pos` (Tensor[B, N, pos_dim]) and `img_mask` (Tensor[B, N])."""
        out = self.bert(
            batch["input_ids"],
            batch["text_mask"],
            batch["img_feats"],
            batch["img_pos"],
            batch["img_mask"],
            batch.get("token_type_ids"),
        )
        return self.classifier(out.pooled)


class OscarForPretraining(nn.Module):
    """OSCAR + BERT's `cls` heads: masked-word prediction and image-text matching (vilio's BO)."""

    def __init__(self, config: OscarConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = OscarModel(config)
        self.cls = BertPreTrainingHeads(config, self.bert.embeddings.word_embeddings)
        self.apply(partial(init_bert_weights, initializer_range=config.initializer_range))

    def forward(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Word logits (Tensor[B, T, vocab]) over the text positions and matching logits
        (Tensor[B, 2]) from a batch of `hm_torch.pretraining`."""
        out = self.bert(
            batch["input_ids"],
            batch["text_mask"],
            batch["img_feats"],
            batch["img_pos"],
            batch["img_mask"],
            batch.get("token_type_ids"),
        )
        text_len = batch["input_ids"].shape[1]
        return self.cls(out.sequence[:, :text_len], out.pooled)


def oscar_format(
    model: nn.Module, state: Mapping[str, Tensor] | None = None, source: str = ""
) -> CheckpointFormat:
    """Oscar's `pytorch_model.bin` or vilio's `LAST_BO.pth` → `OscarFor{HatefulMemes,Pretraining}`.
    A 2054-wide `img_embedding` is cut to 2052 when `pos_dim` is 4, as vilio does."""
    config, with_heads = model.config, isinstance(model, OscarForPretraining)
    pairs = bert_pairs("bert.", "bert.", config.num_hidden_layers)
    pairs += linear_pairs("bert.img_embedding", "bert.img_embedding")
    unexpected: dict[str, str] = {}
    if config.use_img_layernorm:
        pairs += linear_pairs("bert.LayerNorm", "bert.LayerNorm")
    else:
        unexpected["bert.LayerNorm.*"] = "vilio's OSCAR has no image LayerNorm"
    missing = {"classifier.*": HEAD_RANDOM}
    if with_heads:
        pairs += pretraining_head_pairs("cls.", "cls.")
        unexpected["cls.predictions.decoder.weight"] = TIED
        missing = {"cls.*": "pre-training heads absent from the file are initialised randomly"}
    else:
        unexpected["cls.*"] = "pre-training heads, not used for fine-tuning"
    return CheckpointFormat(
        name="oscar",
        pairs=pairs,
        allow_missing=missing,
        allow_unexpected=unexpected,
        adapters={"bert.img_embedding.weight": slice_columns},
    )


POS_DIMS = {4: "xyxy4", 6: "xyxywh6"}  # pos_dim → the box encoding (`hm_torch.regions`)


def _pos_dim(params: Mapping[str, Any]) -> int:
    pos_dim = params.get("pos_dim", 4)
    if pos_dim not in POS_DIMS:
        raise ValueError(f"pos_dim is {pos_dim!r}, expected one of {sorted(POS_DIMS)}")
    return int(pos_dim)


def _configure(config: BertSettings, params: Mapping[str, Any], feature_dim: int) -> BertSettings:
    return config.replace(feature_dim=feature_dim, pos_dim=_pos_dim(params))


FAMILY = RegionFamily(
    config=OscarConfig,
    model=OscarForHatefulMemes,
    pretraining=OscarForPretraining,
    position=lambda params: POS_DIMS[_pos_dim(params)],
    configure=_configure,
    checkpoint_format=oscar_format,
    model_params=frozenset({"pos_dim"}),
)


ENTRY = region_entry(FAMILY)

__all__ = [
    "ENTRY",
    "FAMILY",
    "OscarConfig",
    "OscarForHatefulMemes",
    "OscarForPretraining",
    "OscarModel",
    "oscar_format",
]
