"""The stage kit of the region-feature models (U, O, V, X, D): `region_entry(family)` turns a
model file's `RegionFamily` (`hm_torch.models.family`) into its train and task pre-training
stages. Nothing here names a model: what differs between them is in their files.

Inputs of a stage (docs/architecture.md §7): `prepared`, `features` (a region-feature store),
`weights` (data/weights, full profile: the upstream checkpoint and BERT vocabulary named by the
params) and, for O and V, `pretrained` (the task pre-training output: `model.safetensors` plus the
`vocab.txt` its ids belong to). In the smoke profile nothing is downloaded: the model is a tiny
random one and the vocabulary is trained on the training texts.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from hm_shared.dataset import Meme, read_prepared_split
from hm_shared.errors import HmDataError, SpecError
from hm_shared.features import FeatureStore
from hm_shared.spec import StageSpec
from hm_torch.checkpoints import native_metadata, save_native
from hm_torch.engine import ModelKit, Trainer, seed_everything
from hm_torch.models.family import Builder, ModelEntry, Pretrainer, RegionFamily, field_names
from hm_torch.models.layers import BertSettings
from hm_torch.params import config_from_params
from hm_torch.pretraining import corrupt_batch, pretraining_loss
from hm_torch.regions import RegionDataset, collate_regions
from hm_torch.tokenization import TextTokenizer, load_tokenizer, train_vocab

Size = Literal["tiny", "base", "large"]


@dataclass(frozen=True)
class RegionModelParams:
    """Model params of a region-model stage (recipe params minus the engine's and the ones
    the model file reads itself, `RegionFamily.model_params`)."""

    size: Size = "large"
    # the released files (the recipe's full table); without them a random init and a
    # vocabulary trained on the training texts (the smoke profile)
    checkpoint: str | None = None  # upstream file under data/weights
    vocab: str | None = None  # BERT vocab.txt under data/weights
    vocab_size: int = 100  # size of a trained vocabulary
    lowercase: bool = True  # False for U's bert-large-cased vocabulary
    max_len: int = 128
    max_regions: int = 100
    object_tags: bool = False  # O: append the regions' object names as a second segment
    # the detector's 1600 VG class names, one a line, under data/weights (objects_vocab.txt);
    # None: the class ids stand in for the names
    tag_vocab: str | None = None
    text_only: bool = False  # ablation: every meme gets zero regions
    itm: bool = True  # pre-training: image-text matching besides masked words
    word_mask_rate: float = 0.15
    region_mask_rate: float = 0.15

    @classmethod
    def from_params(
        cls, params: dict[str, Any], where: str, own: Iterable[str] = ()
    ) -> RegionModelParams:
        """`own`: the params the model file itself reads (they count as known)."""
        return config_from_params(cls, params, where, "model", also_valid=own)


def _split_family_params(
    family: RegionFamily, model_params: dict[str, Any], where: str
) -> tuple[dict[str, Any], RegionModelParams]:
    """(the params only the model file reads, the shared `RegionModelParams`)."""
    own = {k: v for k, v in model_params.items() if k in family.model_params}
    shared = {k: v for k, v in model_params.items() if k not in family.model_params}
    return own, RegionModelParams.from_params(shared, where, family.model_params)


def _config(
    family: RegionFamily,
    params: RegionModelParams,
    own: dict[str, Any],
    store: FeatureStore,
    vocab_size: int,
) -> BertSettings:
    config = family.configure(getattr(family.config, params.size)(), own, store.feature_dim)
    if params.vocab is None:
        config = config.replace(vocab_size=vocab_size)  # a trained vocabulary sets the table size
    return config


def _tag_names(spec: StageSpec, params: RegionModelParams) -> list[str] | None:
    if not params.object_tags:
        return None
    if params.tag_vocab is None:
        return [f"object{i}" for i in range(1600)]
    path = spec.weight(params.tag_vocab, "object vocabulary")
    # the detector's vocab lists synonyms separated by commas; the first name is the tag
    return [line.split(",")[0] for line in path.read_text(encoding="utf-8").splitlines()]


def _tokenizer(
    spec: StageSpec, params: RegionModelParams, texts: Sequence[str], vocab_dir: Path | None
) -> TextTokenizer:
    if vocab_dir is not None:  # a pre-trained model's ids belong to its own vocabulary
        return load_tokenizer(vocab_dir / "vocab.txt", params.lowercase, params.max_len)
    if params.vocab is not None:
        vocab = spec.weight(params.vocab, "BERT vocabulary")
        shutil.copyfile(vocab, spec.output_dir / "vocab.txt")  # predictions need the same ids
        return load_tokenizer(vocab, params.lowercase, params.max_len)
    vocab = train_vocab(texts, spec.output_dir, params.vocab_size, params.lowercase)
    return load_tokenizer(vocab, params.lowercase, params.max_len)


def _build(
    spec: StageSpec,
    family: RegionFamily,
    params: RegionModelParams,
    own: dict[str, Any],
    texts: Sequence[str],
    pretraining: bool,
) -> tuple[nn.Module, TextTokenizer, FeatureStore]:
    store = FeatureStore(spec.path("features"))
    pretrained = (
        spec.path("pretrained") / "model.safetensors"
        if (not pretraining and "pretrained" in spec.inputs)
        else None
    )
    tokenizer = _tokenizer(spec, params, texts, pretrained.parent if pretrained else None)
    if pretrained is not None:
        meta = native_metadata(pretrained)
        if "config" not in meta:
            raise HmDataError("not a task pre-training output of hm_torch (no config)", pretrained)
        config = family.config.from_dict(json.loads(meta["config"]), str(pretrained))
        config = family.finetune(config, own)
    else:
        try:  # a size the model was never released at, or layer ids that do not fit
            config = _config(family, params, own, store, tokenizer.vocab_size)
        except ValueError as exc:
            raise SpecError(f"stage {spec.stage}: model {spec.model_run.model}: {exc}") from exc
    if tokenizer.vocab_size > config.vocab_size:
        raise HmDataError(
            f"vocabulary has {tokenizer.vocab_size} tokens, the model's table "
            f"{config.vocab_size}; use the vocabulary of the checkpoint",
            tokenizer.vocab_file,
        )
    cls = family.pretraining if pretraining else family.model
    assert cls is not None
    model = cls(config)
    source = pretrained
    if source is None and params.checkpoint is not None:
        source = spec.weight(params.checkpoint, "pretrained checkpoint")
    if source is not None:
        report = family.load(model, source)
        # the stage log names what was loaded and which heads start from random init
        print(f"{source}: {report.describe(limit=8)}", file=sys.stderr, flush=True)
    return model, tokenizer, store


def _dataset_factory(
    spec: StageSpec,
    family: RegionFamily,
    params: RegionModelParams,
    own: dict[str, Any],
    tokenizer: TextTokenizer,
    store: FeatureStore,
) -> Callable[[Sequence[Meme]], RegionDataset]:
    tags = _tag_names(spec, params)
    try:
        position = family.position_for(own)
    except ValueError as exc:
        raise SpecError(f"stage {spec.stage}: model {spec.model_run.model}: {exc}") from exc
    source = str(spec.path("features"))

    def dataset(memes: Sequence[Meme]) -> RegionDataset:
        return RegionDataset(
            memes, store, tokenizer, position, params.max_regions, tags, params.text_only, source
        )

    return dataset


def _finetuner(family: RegionFamily) -> Builder:
    def build(spec: StageSpec, model_params: dict[str, Any], train: Sequence[Meme]) -> ModelKit:
        own, params = _split_family_params(family, model_params, f"stage {spec.stage}")
        model, tokenizer, store = _build(spec, family, params, own, [m.text for m in train], False)
        factory = _dataset_factory(spec, family, params, own, tokenizer, store)
        return ModelKit(model=model, collate=collate_regions, dataset=factory)

    return build


class PretrainingLoss:
    """The engine's `loss_fn`: corrupt the batch (on cpu, from the global RNG the engine seeds
    and checkpoints), then MLM (+ ITM) cross-entropy."""

    def __init__(self, tokenizer: TextTokenizer, params: RegionModelParams, itm: bool) -> None:
        self.special_ids = tokenizer.special_ids
        self.mask_id = tokenizer.mask_id
        self.vocab_size = tokenizer.vocab_size
        self.params = params
        self.itm = itm

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        device = batch["input_ids"].device
        seed = int(torch.randint(0, 2**62, (1,)))
        cpu = {k: v.cpu() if isinstance(v, Tensor) else v for k, v in batch.items()}
        corrupted = corrupt_batch(
            cpu,
            special_ids=self.special_ids,
            mask_id=self.mask_id,
            vocab_size=self.vocab_size,
            generator=torch.Generator().manual_seed(seed),
            itm=self.itm,
            word_rate=self.params.word_mask_rate,
            region_rate=self.params.region_mask_rate,
        )
        on_device = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in corrupted.items()}
        return pretraining_loss(model, on_device)[0]


def _pretrainer(family: RegionFamily) -> Pretrainer:
    def pretrain(spec: StageSpec) -> None:
        from hm_torch.train import stage_device, train_config

        # upstream pre-training: 5 % warm-up, cosine, clip 1, drop_last
        defaults = {
            "warmup": 0.05,
            "schedule": "cosine",
            "clip": 1.0,
            "drop_last": True,
            "batch_size": 16,
        }
        config = train_config(spec, defaults)
        own, params = _split_family_params(family, spec.params, f"stage {spec.stage}")
        memes = read_prepared_split(spec.path("prepared"), "pretrain")
        device = stage_device(spec)
        seed_everything(config.seed, device)  # the heads' random init depends on it
        model, tokenizer, store = _build(spec, family, params, own, [m.text for m in memes], True)
        dataset = _dataset_factory(spec, family, params, own, tokenizer, store)(memes)
        loss = PretrainingLoss(tokenizer, params, itm=params.itm)
        trainer = Trainer(
            model,
            config,
            collate_regions,
            work_dir=spec.output_dir,
            device=device,
            loss_fn=loss,
        )
        final = trainer.fit(dataset, None)
        if not (spec.output_dir / "vocab.txt").exists():
            shutil.copyfile(tokenizer.vocab_file, spec.output_dir / "vocab.txt")
        save_native(final.cpu(), spec.output_dir / "model.safetensors", model.config.to_dict())
        trainer.finish()

    return pretrain


def region_entry(family: RegionFamily) -> ModelEntry:
    """The train (and, when the model has a pre-training head, task pre-training) stage of a
    region model, and the params they read."""
    return ModelEntry(
        build=_finetuner(family),
        params=field_names(RegionModelParams) | family.model_params,
        pretrain=_pretrainer(family) if family.pretraining is not None else None,
    )


__all__ = ["PretrainingLoss", "RegionModelParams", "region_entry"]
