"""What a model file gives hm_torch: one `ModelEntry` (its stage builders and the params they
read), and, for a region-feature model, the `RegionFamily` that the shared region stage kit
(`hm_torch.single_stream`) turns into that entry.

`hm_torch.models.MODELS` maps each recipe letter to a model file's `ENTRY`; nothing else names a
letter. Adding a model is one file exporting `ENTRY` plus one row there (docs/architecture.md,
"Adding a model").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from hm_shared.key_account import KeyAccount
from hm_torch.checkpoints import FormatFor, load_pretrained

if TYPE_CHECKING:
    from hm_shared.dataset import Meme
    from hm_shared.spec import StageSpec
    from hm_torch.engine import ModelKit
    from hm_torch.models.layers import BertSettings
    from hm_torch.regions import PositionKind

# (stage spec, its model params `spec.params`, the training memes) → what the train stage runs
Builder = Callable[["StageSpec", dict[str, Any], "Sequence[Meme]"], "ModelKit"]
Pretrainer = Callable[["StageSpec"], None]


@dataclass(frozen=True)
class ModelEntry:
    """One model letter's stages. `params` are the recipe params its builder reads, the
    model's (`spec.params`); the engine's (`spec.engine`) are `hm_torch.engine.ENGINE_PARAMS`.
    Both are published for the orchestrator's plan-time check and split (`hm_torch.accepted`).
    The run (seed, fit, splits) is the spec's `run`."""

    build: Builder
    params: frozenset[str]
    pretrain: Pretrainer | None = None  # a task pre-training stage, for letters that have one


def field_names(cls: type) -> frozenset[str]:
    """The params a config dataclass reads: its field names."""
    return frozenset(f.name for f in dataclasses.fields(cls))


# (config of the `size`, the model's own params, the store's feature width) → config to build
Configure = Callable[["BertSettings", Mapping[str, Any], int], "BertSettings"]
# (a task pre-training output's config, the fine-tuning stage's own params) → config to build
Finetune = Callable[["BertSettings", Mapping[str, Any]], "BertSettings"]
# the model's own params → how its regions' boxes are encoded
PositionFor = Callable[[Mapping[str, Any]], "PositionKind"]


def _unchanged(config: BertSettings, params: Mapping[str, Any]) -> BertSettings:
    return config


@dataclass(frozen=True)
class RegionFamily:
    """One region-feature model: everything the shared stage kit needs to know about it.

    `model(config)(batch) -> logits (Tensor[B, 2])`; `pretraining(config)(batch) ->
    (word_logits (Tensor[B, T, V]), match_logits (Tensor[B, 2]))`, trained by
    `hm_torch.pretraining.pretraining_loss`. `backbone` is the top-level module name whose weights
    a task pre-training output hands to fine-tuning (heads outside it start fresh).
    `model_params` are the params only this model reads; `configure`, `finetune` and `position`
    get them (absent ones are absent: each model applies its own defaults)."""

    config: type[BertSettings]
    model: type[nn.Module]
    pretraining: type[nn.Module] | None
    position: PositionKind | PositionFor
    configure: Configure
    checkpoint_format: FormatFor
    backbone: str = "bert"
    model_params: frozenset[str] = frozenset()
    finetune: Finetune = _unchanged

    def position_for(self, params: Mapping[str, Any]) -> PositionKind:
        return self.position(params) if callable(self.position) else self.position

    def load(self, model: nn.Module, path: Path) -> KeyAccount:
        """An upstream checkpoint of this model, or a task pre-training output, into `model`."""
        return load_pretrained(model, path, self.checkpoint_format, self.backbone)


__all__ = [
    "Builder",
    "Configure",
    "Finetune",
    "ModelEntry",
    "PositionFor",
    "Pretrainer",
    "RegionFamily",
    "field_names",
]
