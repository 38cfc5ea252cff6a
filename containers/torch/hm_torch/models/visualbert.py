"""VisualBERT as vilio's model "V": transformers' `VisualBertModel` layout on our SDPA layers.

Attribute names are transformers' (`visual_bert.embeddings.visual_projection`, …), so HF
checkpoints load by prefix and the parity test compares against `transformers.VisualBertModel`
directly; MMF's `model.pth` and the original `.th` files load through the rename tables in
`hm_torch.checkpoints`. Boxes are not used. Regions get token type 1 and visual position 0, as in
vilio. The default head is vilio's `--reg` head: a softmax-weighted average of the [CLS] vector of
every hidden state, each after Dropout(0.2), then multi-sample dropout (5 × Dropout(0.5) into one
shared Linear(H, 2), averaged).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor, nn

from hm_shared.errors import HmDataError
from hm_torch.checkpoints import (
    HEAD_RANDOM,
    TIED,
    CheckpointFormat,
    bert_pairs,
    pretraining_head_pairs,
)
from hm_torch.models.family import RegionFamily
from hm_torch.models.layers import (
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
class VisualBertConfig(BertSettings):
    visual_embedding_dim: int = 2048  # MMF's COCO pre-trained model
    num_labels: int = 2
    head: Literal["layer_average", "pooled"] = "layer_average"  # vilio --reg, or the standard head
    layer_dropout: float = 0.2
    num_dropout_samples: int = 5
    sample_dropout: float = 0.5


class VisualBertEmbeddings(nn.Module):
    def __init__(self, config: VisualBertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.visual_token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.visual_position_embeddings = nn.Embedding(
            config.max_position_embeddings, config.hidden_size
        )
        self.visual_projection = nn.Linear(config.visual_embedding_dim, config.hidden_size)

    def forward(
        self, input_ids: Tensor, token_type_ids: Tensor | None, visual_embeds: Tensor
    ) -> Tensor:
        seq_len = input_ids.shape[1]
        positions = torch.arange(seq_len, device=input_ids.device)[None, :]  # (1, T)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        text = (
            self.word_embeddings(input_ids)
            + self.token_type_embeddings(token_type_ids)
            + self.position_embeddings(positions)
        )  # (B, T, H)
        visual = (
            self.visual_projection(visual_embeds)
            + self.visual_position_embeddings.weight[0]
            + self.visual_token_type_embeddings.weight[1]
        )  # (B, N, H)
        # One LayerNorm over both parts, unlike UNITER.
        return self.dropout(self.LayerNorm(torch.cat([text, visual], dim=1)))  # (B, T + N, H)


class VisualBertModel(nn.Module):
    def __init__(self, config: VisualBertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = VisualBertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config)

    def special_visual_initialize(self) -> None:
        """Copy the text type and position tables into the visual ones (VisualBERT's init)."""
        emb = self.embeddings
        with torch.no_grad():
            emb.visual_token_type_embeddings.weight.copy_(emb.token_type_embeddings.weight)
            emb.visual_position_embeddings.weight.copy_(emb.position_embeddings.weight)

    def forward(
        self,
        input_ids: Tensor,
        text_mask: Tensor,
        visual_embeds: Tensor,
        visual_mask: Tensor,
        token_type_ids: Tensor | None = None,
    ) -> EncoderOutput:
        """Encode text and regions as one sequence.

        Args:
            input_ids (Tensor[B, T]): `[CLS] text [SEP]`, padded with 0.
            text_mask (Tensor[B, T]): 1 for real tokens, 0 for padding.
            visual_embeds (Tensor[B, N, visual_embedding_dim]): region features; N may be 0.
            visual_mask (Tensor[B, N]): 1 for real regions, 0 for padding.
            token_type_ids (Tensor[B, T] | None): zeros if None.

        Returns:
            EncoderOutput with `sequence` (Tensor[B, T + N, H]), text first, then regions.
        """
        hidden = self.embeddings(input_ids, token_type_ids, visual_embeds)  # (B, T + N, H)
        mask = torch.cat([text_mask, visual_mask], dim=1)  # (B, T + N)
        states = self.encoder(hidden, extended_attention_mask(mask, hidden.dtype))
        return EncoderOutput(states[-1], self.pooler(states[-1]), states)


class VisualBertLayerAverageHead(nn.Module):
    def __init__(self, config: VisualBertConfig) -> None:
        super().__init__()
        init = torch.full((config.num_hidden_layers + 1,), -3.0)
        init[-1] = 0.0  # start close to "last layer only"
        self.layer_weights = nn.Parameter(init)
        self.layer_dropout = nn.Dropout(config.layer_dropout)
        self.sample_dropouts = nn.ModuleList(
            nn.Dropout(config.sample_dropout) for _ in range(config.num_dropout_samples)
        )
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, hidden_states: list[Tensor]) -> Tensor:
        cls = torch.stack(
            [self.layer_dropout(h[:, 0]) for h in hidden_states], dim=0
        )  # (L+1, B, H)
        weights = self.layer_weights.softmax(dim=0)[:, None, None]  # (L+1, 1, 1)
        pooled = (weights * cls).sum(dim=0)  # (B, H)
        logits = [self.classifier(drop(pooled)) for drop in self.sample_dropouts]
        return torch.stack(logits, dim=0).mean(dim=0)  # (B, num_labels)


class VisualBertForHatefulMemes(nn.Module):
    def __init__(self, config: VisualBertConfig) -> None:
        super().__init__()
        self.config = config
        self.visual_bert = VisualBertModel(config)
        self.head: nn.Module
        if config.head == "layer_average":
            self.head = VisualBertLayerAverageHead(config)
        else:
            self.head = classifier_head(config.hidden_size, config.num_labels)
        # the head too: vilio's entryV.py applies its N(0, 0.02) / zero-bias init to the
        # classifier of both branches (`self.classifier.apply(self.init_weights)`)
        self.apply(partial(init_bert_weights, initializer_range=config.initializer_range))
        self.visual_bert.special_visual_initialize()

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Logits (Tensor[B, 2]) from a batch of `hm_torch.regions` with keys `input_ids`,
        `text_mask` (Tensor[B, T]), `img_feats` (Tensor[B, N, 2048]), `img_mask` (Tensor[B, N])."""
        out = self.visual_bert(
            batch["input_ids"],
            batch["text_mask"],
            batch["img_feats"],
            batch["img_mask"],
            batch.get("token_type_ids"),
        )
        if self.config.head == "layer_average":
            return self.head(out.hidden_states)
        return self.head(out.pooled)


class VisualBertForPretraining(nn.Module):
    """VisualBERT + BERT's `cls` heads: masked-word prediction and image-text matching."""

    def __init__(self, config: VisualBertConfig) -> None:
        super().__init__()
        self.config = config
        self.visual_bert = VisualBertModel(config)
        self.cls = BertPreTrainingHeads(config, self.visual_bert.embeddings.word_embeddings)
        self.apply(partial(init_bert_weights, initializer_range=config.initializer_range))
        self.visual_bert.special_visual_initialize()

    def forward(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Word logits (Tensor[B, T, vocab]) over the text positions and matching logits
        (Tensor[B, 2]) from a batch of `hm_torch.pretraining`."""
        out = self.visual_bert(
            batch["input_ids"],
            batch["text_mask"],
            batch["img_feats"],
            batch["img_mask"],
            batch.get("token_type_ids"),
        )
        text_len = batch["input_ids"].shape[1]
        return self.cls(out.sequence[:, :text_len], out.pooled)


VisualBertLayout = Literal["mmf", "original", "hf"]
_VISUAL_RENAMES = {  # MMF / original name → transformers' (= our) name
    "token_type_embeddings_visual": "visual_token_type_embeddings",
    "position_embeddings_visual": "visual_position_embeddings",
    "projection": "visual_projection",
}
_VISUAL_PREFIXES: dict[str, tuple[str, str]] = {  # layout → (backbone prefix, heads prefix)
    "mmf": ("model.bert.", "model.cls."),
    "original": ("bert.bert.", "bert.cls."),
    "hf": ("visual_bert.", "cls."),
}


def visualbert_format(
    model: nn.Module, state: Mapping[str, Tensor], source: str = ""
) -> CheckpointFormat:
    """MMF `model.pth`, original uclanlp `.th` or HF VisualBERT (told apart by their keys) →
    `VisualBertFor{HatefulMemes,Pretraining}`."""
    return layout_format(
        model.config, detect_layout(state, source), isinstance(model, VisualBertForPretraining)
    )


def layout_format(
    config: VisualBertConfig, layout: VisualBertLayout, with_heads: bool
) -> CheckpointFormat:
    """The rename table of one of the three file layouts."""
    backbone, heads = _VISUAL_PREFIXES[layout]
    pairs = bert_pairs(backbone, "visual_bert.", config.num_hidden_layers)
    for theirs, ours in _VISUAL_RENAMES.items():
        name = theirs if layout != "hf" else ours
        suffixes = ("weight", "bias") if ours == "visual_projection" else ("weight",)
        pairs += [
            (f"{backbone}embeddings.{name}.{p}", f"visual_bert.embeddings.{ours}.{p}")
            for p in suffixes
        ]
    unexpected = {
        f"{heads}predictions.decoder.weight": TIED,
        f"{heads}predictions.decoder.bias": "a copy of cls.predictions.bias",
        "bert.classifier.*": "head of another task in an original VisualBERT file",
        "detector.*": "MMF detector weights; we read extracted region features",
    }
    if with_heads:
        pairs += pretraining_head_pairs(heads, "cls.")
        missing = {"cls.*": "pre-training heads absent from the file are initialised randomly"}
    else:
        unexpected[f"{heads}*"] = "pre-training heads, not used for fine-tuning"
        missing = {"head.*": HEAD_RANDOM}
    return CheckpointFormat(
        name=f"visualbert-{layout}", pairs=pairs, allow_missing=missing, allow_unexpected=unexpected
    )


def detect_layout(state: Mapping[str, Tensor], source: str) -> VisualBertLayout:
    for layout, (backbone, _) in _VISUAL_PREFIXES.items():
        if f"{backbone}embeddings.word_embeddings.weight" in state:
            return layout  # type: ignore[return-value]
    raise HmDataError(
        "not a VisualBERT checkpoint: no embeddings.word_embeddings.weight under any of "
        f"{[p for p, _ in _VISUAL_PREFIXES.values()]}",
        source,
    )


def _configure(config: BertSettings, params: Mapping[str, Any], feature_dim: int) -> BertSettings:
    return config.replace(visual_embedding_dim=feature_dim, **_head(params))


def _head(params: Mapping[str, Any]) -> dict[str, Any]:
    # also over a pre-trained config: the fine-tuning recipe chooses the head
    return {"head": params.get("head", "layer_average")}


FAMILY = RegionFamily(
    config=VisualBertConfig,
    model=VisualBertForHatefulMemes,
    pretraining=VisualBertForPretraining,
    position="none",
    configure=_configure,
    checkpoint_format=visualbert_format,
    backbone="visual_bert",
    model_params=frozenset({"head"}),
    finetune=lambda config, params: config.replace(**_head(params)),
)


ENTRY = region_entry(FAMILY)

__all__ = [
    "ENTRY",
    "FAMILY",
    "VisualBertConfig",
    "VisualBertEmbeddings",
    "VisualBertForHatefulMemes",
    "VisualBertForPretraining",
    "VisualBertLayerAverageHead",
    "VisualBertModel",
    "detect_layout",
    "layout_format",
    "visualbert_format",
]
