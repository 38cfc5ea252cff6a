"""Model letters → model files, in one explicit table (no registry filled by imports).

Each model file exports `ENTRY` (`hm_torch.models.family.ModelEntry`): the builder of its train
stage, the params that builder reads, and its task pre-training stage if it has one. Adding a
model is one file plus one row here (docs/architecture.md, "Adding a model").
"""

from __future__ import annotations

from hm_torch.models import baseline, devlbert, hateclipper, lxmert, oscar, uniter, visualbert
from hm_torch.models.family import ModelEntry

MODELS: dict[str, ModelEntry] = {
    "B": baseline.ENTRY,
    "C": hateclipper.ENTRY,
    "D": devlbert.ENTRY,
    "O": oscar.ENTRY,
    "U": uniter.ENTRY,
    "V": visualbert.ENTRY,
    "X": lxmert.ENTRY,
}

__all__ = ["MODELS"]
