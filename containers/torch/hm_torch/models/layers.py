"""BERT building blocks shared by the single-stream models (U, O, V): post-LN encoder layers whose
attribute names are HF `BertModel`'s, attention through `scaled_dot_product_attention`, the tanh
pooler, the MLM/ITM pre-training heads and the classification head used upstream by U and O.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hm_shared.errors import HmDataError

AttnImplementation = Literal["sdpa", "eager"]


@dataclass
class BertSettings:
    """Hyper-parameters of a BERT encoder (HF `BertConfig` names and bert-base defaults)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    # "eager" is the explicit softmax(QKᵀ)V path, kept for the benchmark and debugging.
    attn_implementation: AttnImplementation = "sdpa"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> Self:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise HmDataError(
                f"unknown {cls.__name__} field(s) {unknown}; expected some of {sorted(known)}",
                source,
            )
        return cls(**values)

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)

    @classmethod
    def base(cls) -> Self:
        return cls()

    @classmethod
    def large(cls) -> Self:
        return cls(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
        )

    @classmethod
    def tiny(cls) -> Self:
        """A few-thousand-parameter encoder for tests and the smoke profile."""
        return cls(
            vocab_size=100,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
        )


class EncoderOutput(NamedTuple):
    sequence: Tensor  # (B, T, H) last layer
    pooled: Tensor  # (B, H) tanh pooler on position 0
    hidden_states: list[Tensor]  # L + 1 tensors (B, T, H): embeddings, then each layer


def extended_attention_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """(B, T) 1/0 mask → additive (B, 1, 1, T) mask: 0 where attended, dtype-min where not."""
    mask = mask.to(dtype)[:, None, None, :]  # (B, 1, 1, T)
    return (1.0 - mask) * torch.finfo(dtype).min


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertSettings) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
    ) -> Tensor:
        seq_len = input_ids.shape[1]
        if position_ids is None:
            position_ids = torch.arange(seq_len, device=input_ids.device)[None, :]  # (1, T)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        embeddings = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(position_ids)
            + self.token_type_embeddings(token_type_ids)
        )  # (B, T, H)
        return self.dropout(self.LayerNorm(embeddings))


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertSettings) -> None:
        super().__init__()
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(
                f"hidden_size {config.hidden_size} is not a multiple of "
                f"num_attention_heads {config.num_attention_heads}"
            )
        self.num_heads = config.num_attention_heads
        self.head_size = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob
        self.implementation = config.attn_implementation

    def _heads(self, x: Tensor) -> Tensor:
        batch, seq_len, _ = x.shape
        return x.view(batch, seq_len, self.num_heads, self.head_size).transpose(
            1, 2
        )  # (B, nh, T, hs)

    def forward(
        self, hidden: Tensor, additive_mask: Tensor | None, context: Tensor | None = None
    ) -> Tensor:
        # cross-attention (LXMERT) when `context` is given: keys and values come from it
        source = hidden if context is None else context
        q, k, v = (
            self._heads(self.query(hidden)),
            self._heads(self.key(source)),
            self._heads(self.value(source)),
        )
        dropout_p = self.dropout_p if self.training else 0.0
        if self.implementation == "sdpa":
            context = F.scaled_dot_product_attention(
                q, k, v, attn_mask=additive_mask, dropout_p=dropout_p
            )
        else:
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_size)  # (B, nh, T, T)
            if additive_mask is not None:
                scores = scores + additive_mask
            probs = F.dropout(scores.softmax(dim=-1), p=dropout_p, training=self.training)
            context = probs @ v  # (B, nh, T, hs)
        batch, _, seq_len, _ = context.shape
        return context.transpose(1, 2).reshape(batch, seq_len, -1)  # (B, T, H)


class BertSelfOutput(nn.Module):
    def __init__(self, config: BertSettings) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertSettings) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, hidden: Tensor, additive_mask: Tensor | None) -> Tensor:
        return self.output(self.self(hidden, additive_mask), hidden)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertSettings) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, hidden: Tensor) -> Tensor:
        return F.gelu(self.dense(hidden))  # erf GeLU, as BERT's "gelu"


class BertOutput(nn.Module):
    def __init__(self, config: BertSettings) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class BertLayer(nn.Module):
    def __init__(self, config: BertSettings) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, hidden: Tensor, additive_mask: Tensor | None) -> Tensor:
        attended = self.attention(hidden, additive_mask)
        return self.output(self.intermediate(attended), attended)


class BertEncoder(nn.Module):
    def __init__(self, config: BertSettings) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, hidden: Tensor, additive_mask: Tensor | None) -> list[Tensor]:
        """Returns every hidden state: the input, then the output of each layer (L + 1 tensors)."""
        states = [hidden]
        for layer in self.layer:
            hidden = layer(hidden, additive_mask)
            states.append(hidden)
        return states


class BertPooler(nn.Module):
    def __init__(self, config: BertSettings) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: Tensor) -> Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, H)


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: BertSettings) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.LayerNorm(F.gelu(self.dense(hidden)))


class BertLMPredictionHead(nn.Module):
    def __init__(self, config: BertSettings, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight  # tied, as in BERT
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: Tensor) -> Tensor:
        return self.decoder(self.transform(hidden)) + self.bias  # (…, vocab)


class BertPreTrainingHeads(nn.Module):
    """Keys `cls.predictions.*` (MLM) and `cls.seq_relationship.*` (here: image-text matching)."""

    def __init__(self, config: BertSettings, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(config, word_embeddings)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)

    def forward(self, sequence: Tensor, pooled: Tensor) -> tuple[Tensor, Tensor]:
        return self.predictions(sequence), self.seq_relationship(pooled)


def classifier_head(hidden_size: int, num_labels: int = 2) -> nn.Sequential:
    """vilio's head for U, O (and X): keys `classifier.{0,2,3}`."""
    return nn.Sequential(
        nn.Linear(hidden_size, 2 * hidden_size),
        nn.GELU(),
        nn.LayerNorm(2 * hidden_size, eps=1e-12),
        nn.Linear(2 * hidden_size, num_labels),
    )


def init_bert_weights(module: nn.Module, initializer_range: float) -> None:
    """BERT's initialisation: `model.apply(partial(init_bert_weights, initializer_range=r))`."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=initializer_range)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=initializer_range)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


__all__ = [
    "AttnImplementation",
    "BertAttention",
    "BertEmbeddings",
    "BertEncoder",
    "BertIntermediate",
    "BertLMPredictionHead",
    "BertLayer",
    "BertOutput",
    "BertPooler",
    "BertPreTrainingHeads",
    "BertSelfAttention",
    "BertSelfOutput",
    "BertSettings",
    "EncoderOutput",
    "classifier_head",
    "extended_attention_mask",
    "init_bert_weights",
]
