"""ERNIE-ViL (two-stream, co-attention) on Paddle 2.6 dynamic graph, with the Hateful Memes head.

Attribute names follow the upstream static-graph variable names (reference/models.md §6) so that
`hm_paddle.params` is a plain rename table: `encoder_layer_3_ffn_fc_0.w_0` is
`ernie_vil.encoder_layer.3.ffn_fc_0.weight`. Paddle's `nn.Linear` stores weights as [in, out],
the same layout as fluid's `fc`, so no parameter is transposed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import paddle
import paddle.nn.functional as F
from paddle import Tensor, nn

_MASK_SCALE = 10000.0  # upstream builds attention biases as (m·mᵀ − 1)·10000


@dataclass(frozen=True)
class ErnieVilConfig:
    """Hyper-parameters of `ernie_vil_config.base.json` / `ernie_vil.large.json` (default base)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 512
    sent_type_vocab_size: int = 4
    v_feature_size: int = 2048
    v_hidden_size: int = 1024
    v_num_attention_heads: int = 8
    v_intermediate_size: int = 1024
    co_hidden_size: int = 1024
    co_num_attention_heads: int = 8
    # A co-attention layer follows text layer t_biattention_id[k] - 1 and vision layer
    # v_biattention_id[k] - 1; one text and one vision layer close the stack.
    v_biattention_id: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    t_biattention_id: tuple[int, ...] = (6, 7, 8, 9, 10, 11)
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5  # fluid.layers.layer_norm default, not BERT's 1e-12

    def __post_init__(self) -> None:
        if len(self.v_biattention_id) != len(self.t_biattention_id):
            raise ValueError("v_biattention_id and t_biattention_id must have the same length")
        if self.t_biattention_id[-1] + 1 != self.num_hidden_layers:
            raise ValueError(
                f"num_hidden_layers {self.num_hidden_layers} must be t_biattention_id[-1] + 1 "
                f"= {self.t_biattention_id[-1] + 1}"
            )

    @property
    def intermediate_size(self) -> int:
        return 4 * self.hidden_size  # upstream hard-codes d_inner_hid = 4·hidden

    @property
    def num_vision_layers(self) -> int:
        return self.v_biattention_id[-1] + 1

    @property
    def num_co_layers(self) -> int:
        return len(self.t_biattention_id)

    @classmethod
    def base(cls) -> ErnieVilConfig:
        return cls()

    @classmethod
    def large(cls) -> ErnieVilConfig:
        return cls(
            hidden_size=1024,
            num_hidden_layers=24,
            num_attention_heads=16,
            v_num_attention_heads=16,
            v_intermediate_size=4096,
            co_num_attention_heads=16,
            t_biattention_id=(18, 19, 20, 21, 22, 23),
        )

    @classmethod
    def tiny(cls, vocab_size: int = 100, v_feature_size: int = 2048) -> ErnieVilConfig:
        return cls(
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            max_position_embeddings=128,
            v_feature_size=v_feature_size,
            v_hidden_size=40,
            v_num_attention_heads=2,
            v_intermediate_size=64,
            co_hidden_size=40,
            co_num_attention_heads=2,
            v_biattention_id=(0, 1),
            t_biattention_id=(1, 3),
        )

    @classmethod
    def named(cls, size: str, **overrides: int) -> ErnieVilConfig:
        """`base`, `large` or `tiny`, with field overrides (vocab_size, v_feature_size)."""
        sizes = {"base": cls.base, "large": cls.large, "tiny": cls.tiny}
        if size not in sizes:
            raise ValueError(f"unknown ERNIE-ViL size {size!r}; expected one of {sorted(sizes)}")
        return dataclasses.replace(sizes[size](), **overrides)


def _linear(cfg: ErnieVilConfig, d_in: int, d_out: int) -> nn.Linear:
    init = nn.initializer.TruncatedNormal(std=cfg.initializer_range)
    return nn.Linear(
        d_in,
        d_out,
        weight_attr=paddle.ParamAttr(initializer=init),
        bias_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(0.0)),
    )


def _embedding(cfg: ErnieVilConfig, num: int, dim: int) -> nn.Embedding:
    init = nn.initializer.TruncatedNormal(std=cfg.initializer_range)
    return nn.Embedding(num, dim, weight_attr=paddle.ParamAttr(initializer=init))


def _attention_bias(mask_q: Tensor, mask_k: Tensor, heads: int) -> Tensor:
    """(B, heads, Tq, Tk) additive bias from 0/1 masks (B, Tq) and (B, Tk), as upstream."""
    pair = paddle.matmul(mask_q.unsqueeze(-1), mask_k.unsqueeze(1))  # (B, Tq, Tk)
    bias = (pair - 1.0) * _MASK_SCALE
    bias.stop_gradient = True
    return bias.unsqueeze(1).expand([-1, heads, -1, -1])


class ErnieVilAttention(nn.Layer):
    def __init__(
        self, cfg: ErnieVilConfig, d_query: int, d_kv: int, d_inner: int, heads: int, d_out: int
    ) -> None:
        super().__init__()
        self.heads = heads
        self.query_fc = _linear(cfg, d_query, d_inner)
        self.key_fc = _linear(cfg, d_kv, d_inner)
        self.value_fc = _linear(cfg, d_kv, d_inner)
        self.output_fc = _linear(cfg, d_inner, d_out)
        self.dropout = nn.Dropout(cfg.attention_probs_dropout_prob)

    def _split(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        return x.reshape([b, t, self.heads, d // self.heads]).transpose([0, 2, 1, 3])  # (B,h,T,hs)

    def forward(self, queries: Tensor, keys: Tensor, bias: Tensor) -> Tensor:
        q, k, v = (
            self._split(self.query_fc(queries)),
            self._split(self.key_fc(keys)),
            self._split(self.value_fc(keys)),
        )
        q = q * (q.shape[-1] ** -0.5)  # upstream scales q before QKᵀ
        weights = F.softmax(paddle.matmul(q, k, transpose_y=True) + bias)  # (B, h, Tq, Tk)
        ctx = paddle.matmul(self.dropout(weights), v)  # (B, h, Tq, hs)
        b, h, t, hs = ctx.shape
        return self.output_fc(ctx.transpose([0, 2, 1, 3]).reshape([b, t, h * hs]))  # (B, Tq, D)


class ErnieVilFeedForward(nn.Layer):
    """fc → gelu → fc, returned unnormalised; the caller adds the residual (post-LN 'dan')."""

    def __init__(self, cfg: ErnieVilConfig, d_model: int, d_inner: int) -> None:
        super().__init__()
        self.fc_0 = _linear(cfg, d_model, d_inner)
        self.fc_1 = _linear(cfg, d_inner, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_1(F.gelu(self.fc_0(x)))


class ErnieVilLayer(nn.Layer):
    """One self-attention block of either stream (`encoder_layer_i` / `encoder_vlayer_j`)."""

    def __init__(self, cfg: ErnieVilConfig, d_model: int, heads: int, d_inner: int) -> None:
        super().__init__()
        eps = cfg.layer_norm_eps
        self.multi_head_att = ErnieVilAttention(cfg, d_model, d_model, d_model, heads, d_model)
        self.post_att_layer_norm = nn.LayerNorm(d_model, epsilon=eps)
        self.ffn = ErnieVilFeedForward(cfg, d_model, d_inner)
        self.post_ffn_layer_norm = nn.LayerNorm(d_model, epsilon=eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        x = self.post_att_layer_norm(x + self.dropout(self.multi_head_att(x, x, bias)))
        return self.post_ffn_layer_norm(x + self.dropout(self.ffn(x)))


class ErnieVilCoLayer(nn.Layer):
    """Co-attention block `encoder_colayer_k`: text attends image and image attends text."""

    def __init__(self, cfg: ErnieVilConfig) -> None:
        super().__init__()
        d_t, d_v, d_co, eps = (
            cfg.hidden_size,
            cfg.v_hidden_size,
            cfg.co_hidden_size,
            cfg.layer_norm_eps,
        )
        heads = cfg.co_num_attention_heads
        self.multi_head_att = ErnieVilAttention(cfg, d_t, d_v, d_co, heads, d_t)
        self.vl_multi_head_att = ErnieVilAttention(cfg, d_v, d_t, d_co, heads, d_v)
        self.post_att_layer_norm = nn.LayerNorm(d_t, epsilon=eps)
        self.vl_post_att_layer_norm = nn.LayerNorm(d_v, epsilon=eps)
        self.ffn = ErnieVilFeedForward(cfg, d_t, cfg.intermediate_size)
        self.vl_ffn = ErnieVilFeedForward(cfg, d_v, cfg.v_intermediate_size)
        self.post_ffn_layer_norm = nn.LayerNorm(d_t, epsilon=eps)
        self.vl_post_ffn_layer_norm = nn.LayerNorm(d_v, epsilon=eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(
        self, text: Tensor, image: Tensor, text_bias: Tensor, image_bias: Tensor
    ) -> tuple[Tensor, Tensor]:
        t = self.post_att_layer_norm(
            text + self.dropout(self.multi_head_att(text, image, text_bias))
        )
        v = self.vl_post_att_layer_norm(
            image + self.dropout(self.vl_multi_head_att(image, text, image_bias))
        )
        t = self.post_ffn_layer_norm(t + self.dropout(self.ffn(t)))
        v = self.vl_post_ffn_layer_norm(v + self.dropout(self.vl_ffn(v)))
        return t, v


class ErnieVilModel(nn.Layer):
    """The encoder and the ReLU poolers of the text [CLS] and image [IMG] tokens."""

    def __init__(self, cfg: ErnieVilConfig) -> None:
        super().__init__()
        self.config = cfg
        d_t, d_v, eps = cfg.hidden_size, cfg.v_hidden_size, cfg.layer_norm_eps
        self.word_embedding = _embedding(cfg, cfg.vocab_size, d_t)
        self.pos_embedding = _embedding(cfg, cfg.max_position_embeddings, d_t)
        self.sent_embedding = _embedding(cfg, cfg.sent_type_vocab_size, d_t)
        self.pre_encoder_layer_norm = nn.LayerNorm(d_t, epsilon=eps)
        self.image_emb = _linear(cfg, cfg.v_feature_size, d_v)
        self.image_loc = _linear(cfg, 5, d_v)
        self.vl_pre_encoder_layer_norm = nn.LayerNorm(d_v, epsilon=eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        self.encoder_layer = nn.LayerList(
            [
                ErnieVilLayer(cfg, d_t, cfg.num_attention_heads, cfg.intermediate_size)
                for _ in range(cfg.num_hidden_layers)
            ]
        )
        self.encoder_vlayer = nn.LayerList(
            [
                ErnieVilLayer(cfg, d_v, cfg.v_num_attention_heads, cfg.v_intermediate_size)
                for _ in range(cfg.num_vision_layers)
            ]
        )
        self.encoder_colayer = nn.LayerList(
            [ErnieVilCoLayer(cfg) for _ in range(cfg.num_co_layers)]
        )
        self.pooled_fc_text = _linear(cfg, d_t, cfg.co_hidden_size)
        self.pooled_fc_image = _linear(cfg, d_v, cfg.co_hidden_size)

    def forward(
        self,
        input_ids: Tensor,
        text_mask: Tensor,
        image_feats: Tensor,
        image_loc: Tensor,
        image_mask: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Pooled text and image vectors, each (B, co_hidden_size).

        Args:
            input_ids (Tensor[B, T] int64): `[CLS] text [SEP]` word-piece ids, padded with 0.
            text_mask (Tensor[B, T] float32): 1 for real tokens, 0 for padding.
            image_feats (Tensor[B, R, v_feature_size] float32): region features, token 0 the
                global (mean) feature.
            image_loc (Tensor[B, R, 5] float32): x1/w, y1/h, x2/w, y2/h, area fraction.
            image_mask (Tensor[B, R] float32): 1 for real regions, 0 for padding.
        """
        cfg = self.config
        seq_len = input_ids.shape[1]
        positions = paddle.arange(seq_len, dtype="int64").unsqueeze(0).expand_as(input_ids)
        text = (
            self.word_embedding(input_ids)
            + self.pos_embedding(positions)
            + self.sent_embedding(paddle.zeros_like(input_ids))
        )
        text = self.dropout(self.pre_encoder_layer_norm(text))  # (B, T, H)
        image = self.image_emb(image_feats) + self.image_loc(image_loc)
        image = self.dropout(self.vl_pre_encoder_layer_norm(image))  # (B, R, V)
        text_bias = _attention_bias(text_mask, text_mask, cfg.num_attention_heads)
        image_bias = _attention_bias(image_mask, image_mask, cfg.v_num_attention_heads)
        co_t_bias = _attention_bias(text_mask, image_mask, cfg.co_num_attention_heads)
        co_v_bias = _attention_bias(image_mask, text_mask, cfg.co_num_attention_heads)
        t_start = v_start = 0
        for k, (v_end, t_end) in enumerate(
            zip(cfg.v_biattention_id, cfg.t_biattention_id, strict=True)
        ):
            for i in range(t_start, t_end):
                text = self.encoder_layer[i](text, text_bias)
            for j in range(v_start, v_end):
                image = self.encoder_vlayer[j](image, image_bias)
            text, image = self.encoder_colayer[k](text, image, co_t_bias, co_v_bias)
            t_start, v_start = t_end, v_end
        text = self.encoder_layer[t_start](text, text_bias)
        image = self.encoder_vlayer[v_start](image, image_bias)
        pooled_text = F.relu(self.pooled_fc_text(text[:, 0]))  # (B, co_hidden)
        pooled_image = F.relu(self.pooled_fc_image(image[:, 0]))  # (B, co_hidden)
        return pooled_text, pooled_image


class ErnieVilForHatefulMemes(nn.Layer):
    """vilio's HM head: pooled text ⊙ pooled image → dropout → `hm_fc` → one logit."""

    def __init__(self, cfg: ErnieVilConfig, text_only: bool = False) -> None:
        super().__init__()
        self.text_only = text_only  # ablation: image inputs zeroed, the image stream sees nothing
        self.ernie_vil = ErnieVilModel(cfg)
        self.dropout = nn.Dropout(cfg.attention_probs_dropout_prob)  # upstream uses this rate
        self.hm_fc = _linear(cfg, cfg.co_hidden_size, 1)

    def forward(
        self,
        input_ids: Tensor,
        text_mask: Tensor,
        image_feats: Tensor,
        image_loc: Tensor,
        image_mask: Tensor,
    ) -> Tensor:
        """Logits (Tensor[B]) of hateful; arguments as `ErnieVilModel.forward`."""
        if self.text_only:
            image_feats = paddle.zeros_like(image_feats)
            image_loc = paddle.zeros_like(image_loc)
        text, image = self.ernie_vil(input_ids, text_mask, image_feats, image_loc, image_mask)
        return self.hm_fc(self.dropout(text * image)).squeeze(-1)  # (B,)


def hateful_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean sigmoid cross-entropy of logits (B,) against 0/1 labels (B,)."""
    return F.binary_cross_entropy_with_logits(logits, labels.astype("float32"))


__all__ = [
    "ErnieVilAttention",
    "ErnieVilCoLayer",
    "ErnieVilConfig",
    "ErnieVilFeedForward",
    "ErnieVilForHatefulMemes",
    "ErnieVilLayer",
    "ErnieVilModel",
    "hateful_loss",
]
