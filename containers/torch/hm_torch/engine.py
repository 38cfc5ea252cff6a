"""The one training engine of every torch model (B, U, O, V, X, D; pre-training too).

Model contract
    `model(batch: dict[str, Tensor]) -> Tensor[B, 2]` — logits of (not hateful, hateful).
    The model ignores keys it does not use (`label` is always in the batch).

Data contract
    A dataset is a `torch.utils.data.Dataset` whose items are dicts (each model family has its
    own item keys) with an int `label` (-1 when unknown). A `collate(items) -> dict[str, Tensor]`
    per model family batches them; `batch["label"]` must be a `Tensor[B]` of int64.
    For class balancing the train dataset also provides `labels() -> np.ndarray[int]`
    (`hm_torch.data.MemeDataset` does).

Use
    >>> trainer = Trainer(model, TrainConfig(lr=1e-5, epochs=5), collate, work_dir=out)
    >>> final = trainer.fit(train_set, valid_set)     # resumes from out/checkpoint/last.pt
    >>> proba = predict_proba(final, test_set, collate)  # np.ndarray[n], P(hateful)
    >>> save_weights(final, out / "model.safetensors"); trainer.finish()

    `fit` returns the module to predict with: the SWA average when `swa`, the best-dev-loss
    weights when `early_stopping`, else the trained model. A custom `loss_fn(model, batch) ->
    scalar Tensor` replaces the classification loss (task pre-training: MLM + ITM).

What the engine does (upstream hm.py, plus resumability)
    AdamW with no weight decay on biases and norm weights (every 1-d parameter); optional
    `head_lr_mult` for non-backbone parameters (upstream `--reg`: 500); linear warm-up over
    `warmup` of the updates then linear (or cosine) decay, or a constant lr; gradient
    accumulation; grad-norm clipping; optional SWA (`AveragedModel` + `SWALR` from `swa_start`
    of the updates); optional early stopping on dev loss or dev AUROC (patience in
    evaluations); class balancing by weighted sampling or loss weights; seeds for
    random/numpy/torch; bf16 autocast on cuda; deterministic algorithms on cpu.

    Log lines (json, one per line) go to `<work_dir>/log.jsonl`: `{"step", "epoch", "loss",
    "lr"}` every `log_every` updates and `{"step", "epoch", "dev_loss", "dev_auroc"}` at each
    evaluation (every `eval_every` updates, and at every epoch end).

Resumability
    Every `checkpoint_every` updates and at every epoch end the whole training state (model,
    optimiser, scheduler, SWA model and scheduler, RNG states, step, epoch, position in the
    epoch, early-stopping state, log length) is written atomically to
    `<work_dir>/checkpoint/last.pt`. A restarted `fit` with the same config continues from it;
    on cpu it ends with the same weights as an uninterrupted run: the batch order of an epoch
    is a pure function of (seed, epoch), every DataLoader has its own generator, and the log is
    truncated back to where the checkpoint was taken. `finish()` deletes the checkpoint dir.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.swa_utils import SWALR, AveragedModel
from torch.utils.data import DataLoader, Dataset

from hm_shared.dataset import Meme
from hm_shared.errors import HmDataError, SpecError
from hm_shared.io import atomic_open
from hm_shared.metrics import auroc
from hm_torch.checkpoints import write_safetensors

Batch = dict[str, Tensor]
Collate = Callable[[list[dict[str, Any]]], Batch]
LossFn = Callable[[nn.Module, Batch], Tensor]

CHECKPOINT_FORMAT = 2  # 2: numpy RNG state stored as a tensor (weights_only load)
CHECKPOINT_DIR = "checkpoint"  # under work_dir; builders may keep resume state there too
BACKBONE_MARKERS = ("encoder", "embeddings", "pooler")  # upstream `--reg` backbone test


@dataclass(frozen=True)
class TrainConfig:
    """Schedule and optimisation settings. Defaults are upstream hm.py's (lr 1e-5, batch 8,
    5 epochs, 10 % warm-up, clip 5)."""

    epochs: int = 5
    batch_size: int = 8
    eval_batch_size: int = 50
    lr: float = 1e-5
    weight_decay: float = 0.0
    head_lr_mult: float = 1.0  # lr factor of non-backbone parameters (upstream --reg: 500)
    warmup: float = 0.1  # fraction of all updates
    schedule: Literal["linear", "cosine", "constant"] = "linear"  # after the warm-up
    grad_accum: int = 1
    clip: float = 5.0  # max grad norm; 0 disables
    # "sum" = upstream's mean loss × batch size; it matters for clipping, not for Adam's step
    loss_reduction: Literal["mean", "sum"] = "mean"
    swa: bool = False
    swa_start: float = 0.75  # fraction of all updates after which SWA averages
    swa_every: int = 1  # average every N-th update after swa_start (torchcontrib swa_freq: 5)
    swa_lr: float | None = None  # None: lr (upstream)
    swa_anneal_steps: int = 10
    early_stopping: int = 0  # patience in evaluations without a better dev score; 0 disables
    # the dev score early stopping watches and keeps the best weights of: the lowest dev_loss
    # (vilio), or the highest dev_auroc (Hate-CLIPper's checkpoint on val/auroc)
    early_stopping_metric: Literal["dev_loss", "dev_auroc"] = "dev_loss"
    eval_every: int = 0  # updates between dev evaluations; 0: epoch ends only
    log_every: int = 10
    checkpoint_every: int = 200  # updates between checkpoints; epoch ends always checkpoint
    balance: Literal["none", "sampler", "loss"] = "none"
    drop_last: bool = False
    num_workers: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        positive = (
            "epochs",
            "batch_size",
            "eval_batch_size",
            "grad_accum",
            "log_every",
            "swa_every",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise SpecError(f"train param {name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.warmup < 1.0 or not 0.0 <= self.swa_start < 1.0:
            raise SpecError(
                f"train params warmup and swa_start must lie in [0, 1), got {self.warmup} "
                f"and {self.swa_start}"
            )
        if self.swa and self.early_stopping:
            raise SpecError(
                "train params swa and early_stopping exclude each other: early stopping keeps "
                "the best weights, SWA averages the last ones; set one of them to false/0"
            )


# The recipe params of the engine: `TrainConfig`'s fields but the seed, which is the run's
ENGINE_PARAMS = frozenset(f.name for f in fields(TrainConfig)) - {"seed"}


def seed_everything(seed: int, device: torch.device) -> None:
    """Seed python, numpy and torch; on cpu also ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)


def param_groups(
    model: nn.Module, lr: float, weight_decay: float, head_lr_mult: float = 1.0
) -> list[dict[str, Any]]:
    """AdamW groups: no decay on 1-d parameters (biases, LayerNorm/BatchNorm weights); names
    without a backbone marker get `lr * head_lr_mult`."""
    groups: dict[tuple[bool, bool], list[Tensor]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = param.ndim > 1
        backbone = any(marker in name for marker in BACKBONE_MARKERS)
        groups.setdefault((decay, backbone), []).append(param)
    return [
        {
            "params": params,
            "weight_decay": weight_decay if decay else 0.0,
            "lr": lr if backbone or head_lr_mult == 1.0 else lr * head_lr_mult,
        }
        for (decay, backbone), params in sorted(groups.items())
    ]


def _lr_lambda(total: int, warmup_steps: int, schedule: str) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total - warmup_steps)
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        if schedule == "constant":
            return 1.0
        return max(0.0, 1.0 - progress)

    return factor


def _autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _to(batch: Batch, device: torch.device) -> Batch:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()
    }


def _loader(
    dataset: Dataset, collate: Collate, batches: Sequence[list[int]], seed: int, num_workers: int
) -> DataLoader:
    # an own generator per loader: DataLoader otherwise draws its base seed from the global
    # RNG, which would make dropout depend on how many loaders were built (breaks resume)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_sampler=list(batches),
        collate_fn=collate,
        num_workers=num_workers,
        generator=generator,
    )


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    dataset: Dataset,
    collate: Collate,
    *,
    batch_size: int = 50,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
) -> Tensor:
    """Logits (Tensor[n, 2], float32, cpu) of every item, in dataset order."""
    device = torch.device(device)
    model.eval()
    n = len(dataset)  # type: ignore[arg-type]
    batches = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    out = []
    for batch in _loader(dataset, collate, batches, 0, num_workers):
        with _autocast(device):
            logits = model(_to(batch, device))
        out.append(logits.float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 2)


def predict_proba(
    model: nn.Module,
    dataset: Dataset,
    collate: Collate,
    *,
    batch_size: int = 50,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
) -> np.ndarray:
    """Probability of hateful, softmax(logits)[:, 1] (float64[n]), in dataset order."""
    logits = predict_logits(
        model, dataset, collate, batch_size=batch_size, device=device, num_workers=num_workers
    )
    return torch.softmax(logits, dim=-1)[:, 1].double().numpy()


def dataset_labels(dataset: Dataset) -> np.ndarray:
    labels = getattr(dataset, "labels", None)
    if labels is None:
        raise TypeError(f"{type(dataset).__name__} has no labels() method (see hm_torch.engine)")
    return np.asarray(labels(), dtype=np.int64)


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    collate: Collate,
    *,
    batch_size: int = 50,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
) -> dict[str, float]:
    """Mean cross-entropy and AUROC over the labelled items; AUROC is NaN with one class."""
    labels = torch.from_numpy(dataset_labels(dataset))
    logits = predict_logits(
        model, dataset, collate, batch_size=batch_size, device=device, num_workers=num_workers
    )
    known = labels >= 0
    if not bool(known.any()):
        return {"dev_loss": float("nan"), "dev_auroc": float("nan")}
    loss = F.cross_entropy(logits[known], labels[known]).item()
    y = labels[known].numpy()
    p = torch.softmax(logits[known], dim=-1)[:, 1].numpy()
    score = auroc(y, p) if len(np.unique(y)) == 2 else float("nan")
    return {"dev_loss": loss, "dev_auroc": score}


def state_dict_for_saving(model: nn.Module) -> dict[str, Tensor]:
    """cpu, contiguous, unshared copies (safetensors refuses tensors sharing storage)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_weights(model: nn.Module, path: Path) -> None:
    """Final weights in safetensors, written atomically."""
    write_safetensors(path, state_dict_for_saving(model))


@dataclass(frozen=True)
class ModelKit:
    """What a model builder (`hm_torch.models.MODELS`) hands the train stage: the model, its
    family's collate function, and how to turn a list of memes into its dataset."""

    model: nn.Module
    collate: Collate
    dataset: Callable[[Sequence[Meme]], Dataset]


class ClassificationLoss:
    """Cross-entropy over the 2 logits of `model(batch)`, optionally class-weighted."""

    def __init__(self, class_weights: Tensor | None, reduction: str) -> None:
        self.class_weights = class_weights
        self.reduction = reduction

    def __call__(self, model: nn.Module, batch: Batch) -> Tensor:
        logits = model(batch).float()  # (B, 2)
        weight = None if self.class_weights is None else self.class_weights.to(logits.device)
        return F.cross_entropy(logits, batch["label"], weight=weight, reduction=self.reduction)


@dataclass
class _Progress:
    """Everything besides module/optimiser states that a resumed run needs."""

    step: int = 0  # optimiser updates done
    epoch: int = 0  # current epoch
    batch: int = 0  # micro-batches of the current epoch already consumed
    best_score: float = -math.inf  # early stopping: higher is better (-dev_loss or dev_auroc)
    best_epoch: int = 0  # epochs trained when the kept weights were taken
    bad_evals: int = 0
    stopped: bool = False
    log_bytes: int = 0


@dataclass
class _Run:
    """What one `fit` trains with: sizes, loss, optimiser, schedules, SWA, the kept weights."""

    n_items: int
    n_batches: int  # micro-batches an epoch
    total: int  # optimiser updates of the whole fit
    labels: np.ndarray | None  # for class balancing
    loss_fn: LossFn
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    swa_model: AveragedModel | None
    swa_scheduler: SWALR | None
    swa_start: int
    best_state: dict[str, Tensor] | None = None  # early stopping: the best epoch's weights


class Trainer:
    """Fits one model; see the module docstring for the contract."""

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        collate: Collate,
        *,
        work_dir: Path,
        device: torch.device | str = "cpu",
        loss_fn: LossFn | None = None,
        on_checkpoint: Callable[[int], None] | None = None,
    ) -> None:
        self.config = config
        self.collate = collate
        self.work_dir = Path(work_dir)
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.custom_loss = loss_fn
        self.on_checkpoint = on_checkpoint  # called with the step after each checkpoint write
        self.checkpoint_path = self.work_dir / CHECKPOINT_DIR / "last.pt"
        self.log_path = self.work_dir / "log.jsonl"
        # after `fit`: the epochs that produced the returned weights (the best epoch when early
        # stopping kept one): the schedule a traindev fit repeats
        self.best_epoch = 0

    # -- public ---------------------------------------------------------------------------

    def fit(self, train: Dataset, valid: Dataset | None = None) -> nn.Module:
        cfg = self.config
        seed_everything(cfg.seed, self.device)
        if cfg.early_stopping and valid is None:
            raise SpecError("train param early_stopping needs a validation split (param valid)")
        run = self._setup(train)
        progress = _Progress()
        if self.checkpoint_path.exists():
            progress, run.best_state = self._restore(run)
            print(
                f"resuming from {self.checkpoint_path}: epoch {progress.epoch}, "
                f"update {progress.step} of {run.total}",
                file=sys.stderr,
                flush=True,
            )
        self._truncate_log(progress.log_bytes)
        while progress.epoch < cfg.epochs and not progress.stopped:
            epoch = progress.epoch
            self._train_epoch(run, progress, train, valid)
            progress.epoch, progress.batch = epoch + 1, 0
            if valid is not None:
                self._end_epoch(run, progress, self._evaluate(valid, progress, epoch))
            self._save(progress, run)

        self.best_epoch = progress.best_epoch if run.best_state is not None else progress.epoch
        if run.swa_model is not None:
            return run.swa_model.module
        if run.best_state is not None:
            self.model.load_state_dict(run.best_state)
        return self.model

    def finish(self) -> None:
        """Delete the checkpoint dir once the stage's outputs are written."""
        shutil.rmtree(self.checkpoint_path.parent, ignore_errors=True)

    # -- batches --------------------------------------------------------------------------

    def _setup(self, train: Dataset) -> _Run:
        """Loss, optimiser, schedules and SWA of a fit over `train`, before any resume."""
        cfg = self.config
        n_items = len(train)  # type: ignore[arg-type]
        n_batches = self._batches_per_epoch(n_items)
        if n_batches == 0:
            raise HmDataError(
                f"training set has {n_items} items, fewer than one batch "
                f"of {cfg.batch_size} (drop_last)"
            )
        total = math.ceil(n_batches / cfg.grad_accum) * cfg.epochs
        labels = dataset_labels(train) if cfg.balance != "none" else None
        loss_fn = self.custom_loss or ClassificationLoss(
            _class_weights(labels) if cfg.balance == "loss" else None, cfg.loss_reduction
        )
        optimizer = torch.optim.AdamW(
            param_groups(self.model, cfg.lr, cfg.weight_decay, cfg.head_lr_mult), lr=cfg.lr
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _lr_lambda(total, int(cfg.warmup * total), cfg.schedule)
        )
        swa_model = AveragedModel(self.model, use_buffers=True) if cfg.swa else None
        swa_scheduler = (
            SWALR(optimizer, swa_lr=cfg.swa_lr or cfg.lr, anneal_epochs=cfg.swa_anneal_steps)
            if cfg.swa
            else None
        )
        return _Run(
            n_items=n_items,
            n_batches=n_batches,
            total=total,
            labels=labels,
            loss_fn=loss_fn,
            optimizer=optimizer,
            scheduler=scheduler,
            swa_model=swa_model,
            swa_scheduler=swa_scheduler,
            swa_start=int(cfg.swa_start * total),
        )

    def _train_epoch(
        self, run: _Run, progress: _Progress, train: Dataset, valid: Dataset | None
    ) -> None:
        """The micro-batches of the current epoch not yet consumed, `grad_accum` an update."""
        cfg, epoch = self.config, progress.epoch
        batches = self._epoch_batches(run.n_items, epoch, run.labels)
        loader = _loader(
            train, self.collate, batches[progress.batch :], cfg.seed * 1009 + epoch, cfg.num_workers
        )
        self.model.train()
        run.optimizer.zero_grad(set_to_none=True)
        for index, batch in enumerate(loader, start=progress.batch):
            group_start = index - index % cfg.grad_accum
            group_size = min(cfg.grad_accum, run.n_batches - group_start)
            with _autocast(self.device):
                loss = run.loss_fn(self.model, _to(batch, self.device))
            (loss / group_size).backward()
            if index + 1 - group_start < group_size:
                continue  # accumulate: the group's update comes with its last micro-batch
            self._update(run)
            progress.step += 1
            progress.batch = index + 1
            self._after_update(run, progress, loss, valid)

    def _update(self, run: _Run) -> None:
        if self.config.clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)

    def _after_update(
        self, run: _Run, progress: _Progress, loss: Tensor, valid: Dataset | None
    ) -> None:
        """The side effects of update `progress.step`: schedules (or SWA), log, evaluation,
        mid-epoch checkpoint."""
        cfg = self.config
        if (
            run.swa_model is not None
            and run.swa_scheduler is not None
            and (progress.step > run.swa_start)
        ):
            if (progress.step - run.swa_start) % cfg.swa_every == 0:
                run.swa_model.update_parameters(self.model)
            run.swa_scheduler.step()
        else:
            run.scheduler.step()
        if progress.step % cfg.log_every == 0:
            self._log(
                {
                    "step": progress.step,
                    "epoch": progress.epoch,
                    "loss": loss.item(),
                    "lr": run.optimizer.param_groups[0]["lr"],
                }
            )
        if valid is not None and cfg.eval_every and progress.step % cfg.eval_every == 0:
            self._evaluate(valid, progress, progress.epoch)
            self.model.train()
        if (
            cfg.checkpoint_every
            and progress.step % cfg.checkpoint_every == 0
            and progress.batch < run.n_batches
        ):
            self._save(progress, run)

    def _end_epoch(self, run: _Run, progress: _Progress, metrics: dict[str, float]) -> None:
        """Early stopping on the epoch's dev metrics: keep the best weights, count the rest."""
        cfg = self.config
        if not cfg.early_stopping:
            return
        score = _score(metrics, cfg.early_stopping_metric)
        if score > progress.best_score:
            progress.best_score, progress.bad_evals = score, 0
            progress.best_epoch = progress.epoch
            run.best_state = {
                k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()
            }
        else:
            progress.bad_evals += 1
            progress.stopped = progress.bad_evals >= cfg.early_stopping

    def _batches_per_epoch(self, n_items: int) -> int:
        size = self.config.batch_size
        return n_items // size if self.config.drop_last else math.ceil(n_items / size)

    def _epoch_batches(
        self, n_items: int, epoch: int, labels: np.ndarray | None
    ) -> list[list[int]]:
        """The epoch's micro-batches: a pure function of (seed, epoch)."""
        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        if cfg.balance == "sampler" and labels is not None:
            weights = _class_weights(labels)[torch.from_numpy(labels).clamp(min=0)]
            order = torch.multinomial(weights, n_items, replacement=True, generator=generator)
        else:
            order = torch.randperm(n_items, generator=generator)
        indices = order.tolist()
        n_batches = self._batches_per_epoch(n_items)
        return [indices[i * cfg.batch_size : (i + 1) * cfg.batch_size] for i in range(n_batches)]

    # -- log ------------------------------------------------------------------------------

    def _log(self, record: dict[str, Any]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def _truncate_log(self, size: int) -> None:
        # lines written after the checkpoint will be written again by the resumed run
        if self.log_path.exists():
            with open(self.log_path, "r+b") as handle:
                handle.truncate(size)

    def _evaluate(self, valid: Dataset, progress: _Progress, epoch: int) -> dict[str, float]:
        metrics = evaluate(
            self.model,
            valid,
            self.collate,
            batch_size=self.config.eval_batch_size,
            device=self.device,
            num_workers=self.config.num_workers,
        )
        self._log({"step": progress.step, "epoch": epoch, **metrics})
        return metrics

    # -- checkpoint -----------------------------------------------------------------------

    def _fingerprint(self) -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "config": asdict(self.config)}

    def _save(self, progress: _Progress, run: _Run) -> None:
        progress.log_bytes = self.log_path.stat().st_size if self.log_path.exists() else 0
        state = {
            "fingerprint": self._fingerprint(),
            "progress": asdict(progress),
            "model": self.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "swa_model": None if run.swa_model is None else run.swa_model.state_dict(),
            "swa_scheduler": None if run.swa_scheduler is None else run.swa_scheduler.state_dict(),
            "best_state": run.best_state,
            "rng": {
                "python": random.getstate(),
                "numpy": _numpy_state_to_torch(np.random.get_state()),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
            },
        }
        with atomic_open(self.checkpoint_path, "wb") as handle:
            torch.save(state, handle)
        if self.on_checkpoint is not None:
            self.on_checkpoint(progress.step)

    def _restore(self, run: _Run) -> tuple[_Progress, dict[str, Tensor] | None]:
        path = self.checkpoint_path
        try:
            # weights_only: even our own checkpoint cannot run code when read back
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # any unreadable checkpoint gets one message
            raise HmDataError(
                f"cannot read training checkpoint: {exc}; delete it to start over", path
            ) from exc
        if state.get("fingerprint") != self._fingerprint():
            raise HmDataError(
                "checkpoint was written with other train params "
                f"({state.get('fingerprint')}, now {self._fingerprint()}); delete it to start "
                "over",
                path,
            )
        self.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        if run.swa_model is not None and run.swa_scheduler is not None:
            run.swa_model.load_state_dict(state["swa_model"])
            run.swa_scheduler.load_state_dict(state["swa_scheduler"])
        rng = state["rng"]
        random.setstate(rng["python"])
        np.random.set_state(_numpy_state_from_torch(rng["numpy"]))
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(rng["cuda"])
        return _Progress(**state["progress"]), state["best_state"]


def _score(metrics: dict[str, float], metric: str) -> float:
    """The early-stopping score, higher is better; NaN (one class in dev) never improves."""
    value = metrics[metric]
    if math.isnan(value):
        return -math.inf
    return -value if metric == "dev_loss" else value


def _numpy_state_to_torch(state: tuple[Any, ...]) -> tuple[Any, ...]:
    # numpy's MT19937 key array as a tensor: torch.load(weights_only=True) refuses ndarrays
    name, keys, pos, has_gauss, cached = state
    return (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))


def _numpy_state_from_torch(state: tuple[Any, ...]) -> tuple[Any, ...]:
    name, keys, pos, has_gauss, cached = state
    return (name, keys.numpy().astype(np.uint32), pos, has_gauss, cached)


def _class_weights(labels: np.ndarray) -> Tensor:
    """Inverse class frequency, normalised so a balanced set gets weights (1, 1)."""
    known = labels[labels >= 0]
    counts = np.bincount(known, minlength=2).astype(np.float64)
    if (counts == 0).any():
        raise HmDataError(
            f"class balancing needs both classes in the training set, got "
            f"counts {counts.astype(int).tolist()} for labels (0, 1)"
        )
    return torch.tensor(len(known) / (2.0 * counts), dtype=torch.float32)


__all__ = [
    "CHECKPOINT_DIR",
    "ENGINE_PARAMS",
    "Batch",
    "ClassificationLoss",
    "Collate",
    "LossFn",
    "ModelKit",
    "TrainConfig",
    "Trainer",
    "dataset_labels",
    "evaluate",
    "param_groups",
    "predict_logits",
    "predict_proba",
    "save_weights",
    "seed_everything",
]
