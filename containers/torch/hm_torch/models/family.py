"""What the region-model stage kit (`hm_torch.single_stream`) needs of one model file.

A model file that follows this contract (LXMERT `X`, DeVLBERT `D`) exports one `RegionFamily`:
its config class, its fine-tuning (and optional task pre-training) model, the box encoding its
regions use, how a stage's params and the feature store shape the config, and the upstream
checkpoint format. The kit then builds, loads and trains it with no per-letter branch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

if TYPE_CHECKING:
    from hm_torch.checkpoints import CheckpointFormat
    from hm_torch.models.layers import BertSettings
    from hm_torch.regions import PositionKind

# (config from `size`, the stage's model params, the store's feature width) → the config to build
Configure = Callable[["BertSettings", Mapping[str, Any], int], "BertSettings"]
# (the model to load into, the upstream state dict after `module.` is stripped) → its format
FormatFor = Callable[[nn.Module, Mapping[str, Tensor]], "CheckpointFormat"]


@dataclass(frozen=True)
class RegionFamily:
    """One region-feature model: everything the shared stage kit needs to know about it.

    `model(config)(batch) -> logits (Tensor[B, 2])`; `pretraining(config)(batch) ->
    (word_logits (Tensor[B, T, V]), match_logits (Tensor[B, 2]))`, trained by
    `hm_torch.pretraining.pretraining_loss`. `backbone` is the top-level module name whose weights
    a task pre-training output hands to fine-tuning (heads outside it start fresh)."""

    config: type[BertSettings]
    model: type[nn.Module]
    pretraining: type[nn.Module] | None
    position: PositionKind
    configure: Configure
    checkpoint_format: FormatFor
    backbone: str = "bert"
    model_params: frozenset[str] = frozenset()  # params only this family reads


__all__ = ["Configure", "FormatFor", "RegionFamily"]
