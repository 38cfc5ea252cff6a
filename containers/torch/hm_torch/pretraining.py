"""Task-adaptive pre-training for O and V on the memes' own texts and regions (vilio's
`pretrain_bert{O,V}.py`): masked-word prediction (15 %; 80 % [MASK], 10 % random, 10 % kept),
image-text matching with 50 % of texts swapped for another meme's (O), and region-feature
masking as input noise (15 % of regions: 80 % zeroed, 10 % swapped for another region's
feature, 10 % kept; no loss on them, as upstream)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE = -100  # cross-entropy ignore index for unmasked positions


def mask_tokens(
    input_ids: Tensor,
    text_mask: Tensor,
    special_ids: Sequence[int],
    mask_id: int,
    vocab_size: int,
    generator: torch.Generator,
    rate: float = 0.15,
) -> tuple[Tensor, Tensor]:
    """BERT masking. Returns the corrupted ids (Tensor[B, T]) and the labels (Tensor[B, T]):
    the original id at chosen positions, IGNORE elsewhere. Special tokens and padding are never
    chosen."""
    candidates = text_mask.bool() & ~torch.isin(input_ids, torch.tensor(list(special_ids)))
    chosen = (torch.rand(input_ids.shape, generator=generator) < rate) & candidates
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE))
    roll = torch.rand(input_ids.shape, generator=generator)
    to_mask = chosen & (roll < 0.8)
    to_random = chosen & (roll >= 0.8) & (roll < 0.9)  # the last 10 % keep their token
    random_ids = torch.randint(len(special_ids), vocab_size, input_ids.shape, generator=generator)
    corrupted = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    corrupted = torch.where(to_random, random_ids, corrupted)
    return corrupted, labels


def swap_texts(
    batch: Mapping[str, Any], generator: torch.Generator, rate: float = 0.5
) -> tuple[dict[str, Any], Tensor]:
    """Replace the text of about `rate` of the examples by the next example's text (another meme).

    Returns the new batch and the matching labels (Tensor[B]: 1 matched, 0 swapped)."""
    size = batch["input_ids"].shape[0]
    swapped = torch.rand(size, generator=generator) < rate
    if size < 2:
        swapped[:] = False
    source = torch.arange(size)
    source[swapped] = (source[swapped] + 1) % size
    out = dict(batch)
    for key in ("input_ids", "token_type_ids", "text_mask"):
        out[key] = batch[key][source]
    return out, (~swapped).long()


def mask_regions(
    img_feats: Tensor, img_mask: Tensor, generator: torch.Generator, rate: float = 0.15
) -> Tensor:
    """LXMERT/vilio `random_feat`: of about `rate` of the real regions, 80 % are zeroed, 10 %
    take the feature of a random real region of the batch, 10 % keep theirs
    (Tensor[B, N, D] → same shape)."""
    real = img_mask.bool()  # (B, N)
    chosen = (torch.rand(img_mask.shape, generator=generator) < rate) & real
    roll = torch.rand(img_mask.shape, generator=generator)
    out = img_feats.masked_fill((chosen & (roll < 0.8))[..., None], 0.0)
    to_random = chosen & (roll >= 0.8) & (roll < 0.9)
    pool = img_feats[real]  # (R, D): every real region of the batch
    if to_random.any() and len(pool):
        picks = torch.randint(len(pool), (int(to_random.sum()),), generator=generator)
        out[to_random] = pool[picks]
    return out


def corrupt_batch(
    batch: Mapping[str, Any],
    *,
    special_ids: Sequence[int],
    mask_id: int,
    vocab_size: int,
    generator: torch.Generator,
    itm: bool,
    word_rate: float = 0.15,
    region_rate: float = 0.15,
) -> dict[str, Any]:
    """A pre-training batch from a `collate_regions` batch: adds `mlm_labels` (Tensor[B, T]) and,
    with `itm`, `itm_labels` (Tensor[B])."""
    out: dict[str, Any] = dict(batch)
    if itm:
        out, out["itm_labels"] = swap_texts(out, generator)
    out["input_ids"], out["mlm_labels"] = mask_tokens(
        out["input_ids"], out["text_mask"], special_ids, mask_id, vocab_size, generator, word_rate
    )
    out["img_feats"] = mask_regions(out["img_feats"], out["img_mask"], generator, region_rate)
    return out


def pretraining_loss(model: nn.Module, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, float]]:
    """MLM cross-entropy (+ ITM cross-entropy when the batch has `itm_labels`)."""
    word_logits, match_logits = model(batch)  # (B, T, V), (B, 2)
    mlm = F.cross_entropy(
        word_logits.flatten(0, 1), batch["mlm_labels"].flatten(), ignore_index=IGNORE
    )
    if not (batch["mlm_labels"] != IGNORE).any():
        mlm = word_logits.sum() * 0.0  # no word chosen in this batch: keep the graph, add nothing
    parts = {"mlm": float(mlm.detach())}
    loss = mlm
    if "itm_labels" in batch:
        itm = F.cross_entropy(match_logits, batch["itm_labels"])
        parts["itm"] = float(itm.detach())
        loss = loss + itm
    return loss, parts


__all__ = [
    "IGNORE",
    "corrupt_batch",
    "mask_regions",
    "mask_tokens",
    "pretraining_loss",
    "swap_texts",
]
