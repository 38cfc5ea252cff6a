"""The ERNIE-ViL train stage: the upstream fine-tuning recipe, resumable, probabilities out.

Recipe (conf/hm/model_conf_hm): Adam with decoupled weight decay 0.01 except LayerNorm and bias,
lr 1e-5, linear warm-up over 500 steps then constant, 2500 steps of batch 8, global-norm clip 1.0.
Every step re-seeds dropout from (seed, step) and the data order is a permutation per epoch drawn
from (seed, epoch), so a run resumed from its checkpoint continues exactly as if never killed.
"""

from __future__ import annotations

import io
import json
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import paddle
import paddle.nn.functional as F

from hm_paddle.inputs import Batch, ErnieTokenizer, MemeInputs, open_store
from hm_paddle.model import ErnieVilConfig, ErnieVilForHatefulMemes, hateful_loss
from hm_paddle.params import (
    HEADS_REASON,
    IGNORED_REASON,
    RANDOM_REASON,
    load_upstream_params,
)
from hm_paddle.state import load_state
from hm_shared.dataset import read_prepared_split
from hm_shared.errors import HmDataError, MissingWeightsError, SpecError
from hm_shared.fit_outputs import split_metrics, write_split_predictions
from hm_shared.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from hm_shared.spec import StageSpec

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "state.pdckpt"
# The model letters this environment runs, and what they are: both are ERNIE-ViL, the recipe's
# `size` param tells them apart (one table, read by hm_paddle.accepted for the plan-time check).
MODELS = {"EL": "ERNIE-ViL large", "ES": "ERNIE-ViL base (vilio's 'small')"}
# the model's and inputs' own params (recipes: [models.ES.params] and its smoke table)
MODEL_PARAMS = (
    "size",
    "text_only",
    "params_dir",
    "ignore_params",
    "smoke_vocab_size",
    "max_len",
    "max_regions",
    "repeat_dev_seen",
)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; defaults are upstream's (model_conf_hm)."""

    seed: int = 42
    lr: float = 1e-5
    warmup_steps: int = 500
    steps: int = 2500
    batch_size: int = 8
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    checkpoint_every: int = 250
    log_every: int = 50
    eval_batch_size: int = 32

    def lr_at(self, step: int) -> float:
        """Learning rate of 1-based `step`: linear warm-up from 0, then constant.

        Upstream's `manual_warmup_decay` reads fluid's `_decay_step_counter()`, which is 0 at
        the first update, so update k runs at (k − 1) / warmup_steps of the peak rate."""
        counter = step - 1
        if self.warmup_steps and counter < self.warmup_steps:
            return self.lr * counter / self.warmup_steps
        return self.lr


# The recipe params of the optimiser: `TrainConfig`'s fields but the seed, which is the run's
ENGINE_PARAMS = frozenset(TrainConfig.__dataclass_fields__) - {"seed"}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    paddle.seed(seed)


def batch_order(n: int, cfg: TrainConfig, step: int) -> list[int]:
    """Meme indices of 0-based `step`: consecutive slices of a per-epoch permutation."""
    per_epoch = -(-n // cfg.batch_size)
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([cfg.seed, epoch]).permutation(n)
    return perm[k * cfg.batch_size : (k + 1) * cfg.batch_size].tolist()


def _tensors(batch: Batch) -> list[paddle.Tensor]:
    return [
        paddle.to_tensor(a)
        for a in (
            batch.input_ids,
            batch.text_mask,
            batch.image_feats,
            batch.image_loc,
            batch.image_mask,
        )
    ]


def make_optimizer(model: ErnieVilForHatefulMemes, cfg: TrainConfig) -> paddle.optimizer.AdamW:
    # apply_decay_param_fun sees Paddle's generated names (linear_3.w_0), so map from ours.
    decay = {
        p.name
        for n, p in model.named_parameters()
        if "layer_norm" not in n and not n.endswith(".bias")
    }
    return paddle.optimizer.AdamW(
        learning_rate=cfg.lr_at(1),
        parameters=model.parameters(),
        weight_decay=cfg.weight_decay,
        apply_decay_param_fun=lambda name: name in decay,
        grad_clip=paddle.nn.ClipGradByGlobalNorm(cfg.clip_norm),
    )


def _save_checkpoint(
    path: Path,
    model: paddle.nn.Layer,
    opt: paddle.optimizer.Optimizer,
    step: int,
    log: list[dict[str, Any]],
) -> None:
    buffer = io.BytesIO()
    paddle.save(
        {
            "step": step,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "log": json.dumps(log),
        },
        buffer,
    )
    atomic_write_bytes(path, buffer.getvalue())


def fit(
    model: ErnieVilForHatefulMemes,
    data: MemeInputs,
    cfg: TrainConfig,
    checkpoint: Path | None = None,
    on_log: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train `model` for `cfg.steps` steps; resume from / save to `checkpoint` when given."""
    if (data.labels < 0).any():
        raise SpecError("the fit split has memes without a label; expected train or traindev")
    opt = make_optimizer(model, cfg)
    step, log = 0, []
    if checkpoint is not None and checkpoint.is_file():
        # never paddle.load: a state file left in an attempt dir must not be able to run code
        state = load_state(checkpoint, required=("step", "model", "optimizer", "log"))
        model.set_state_dict(state["model"])
        opt.set_state_dict(state["optimizer"])
        step, log = int(state["step"]), json.loads(state["log"])
        log.append({"event": "resumed", "step": step})
    model.train()
    losses: list[float] = []
    while step < cfg.steps:
        batch = data.batch(batch_order(len(data), cfg, step))
        step += 1
        paddle.seed(cfg.seed * 1_000_003 + step)  # dropout masks depend on (seed, step) only
        opt.set_lr(cfg.lr_at(step))
        loss = hateful_loss(model(*_tensors(batch)), paddle.to_tensor(batch.labels))
        loss.backward()
        opt.step()
        opt.clear_grad()
        losses.append(float(loss))
        if step % cfg.log_every == 0 or step == cfg.steps:
            log.append(
                {
                    "step": step,
                    "loss": float(np.mean(losses)),
                    "lr": cfg.lr_at(step),
                }  # no wall time: the output must be a function of the spec (stage records
                # and the trace hold the timings), or its hash and its consumers' keys drift
            )
            losses = []
            if on_log is not None:
                on_log(log)
        if checkpoint is not None and (step % cfg.checkpoint_every == 0) and step < cfg.steps:
            _save_checkpoint(checkpoint, model, opt, step, log)
    return log


def predict(model: ErnieVilForHatefulMemes, data: MemeInputs, batch_size: int) -> np.ndarray:
    """Probabilities of hateful (float64[n]) in the order of `data.ids`."""
    model.eval()
    out = []
    with paddle.no_grad():
        for start in range(0, len(data), batch_size):
            batch = data.batch(range(start, min(start + batch_size, len(data))))
            out.append(F.sigmoid(model(*_tensors(batch))).numpy().astype(np.float64))
    model.train()
    return np.concatenate(out)


def _split(spec: StageSpec, name: str) -> list[tuple[str, str, int | None]]:
    return [(m.id, m.text, m.label) for m in read_prepared_split(spec.path("prepared"), name)]


def fit_rows(spec: StageSpec, fit: str) -> list[tuple[str, str, int | None]]:
    """The memes a fit trains on. ERNIE-ViL's own data script (vilio `ernie-vil/utils/
    pandas_scripts.py`) builds traindev as [dev_seen, train, dev_unseen, dev_seen]: dev_seen
    twice, i.e. at twice the weight. `repeat_dev_seen` (default true) keeps that for ES/EL; the
    torch models' traindev (vilio's root script) has every meme once."""
    rows = _split(spec, fit)
    if fit == "traindev" and bool(spec.params.get("repeat_dev_seen", True)):
        rows += _split(spec, "dev_seen")
    return rows


def check_params(spec: StageSpec) -> None:
    """A letter this environment has no model for, or a misspelt recipe param, is an error
    naming it, never a silently ignored setting."""
    letter = spec.model_run.model
    if letter not in MODELS:
        raise SpecError(
            f"stage {spec.stage}: model {letter!r} is not a model of hm_paddle; valid: "
            f"{sorted(MODELS)}"
        )
    valid = f"model params {sorted(MODEL_PARAMS)}, engine settings {sorted(ENGINE_PARAMS)}"
    for part, given, known in (
        ("param", spec.params, set(MODEL_PARAMS)),
        ("engine setting", spec.engine, ENGINE_PARAMS),
    ):
        unknown = sorted(set(given) - known)
        if unknown:
            raise SpecError(
                f"stage {spec.stage}: unknown {part}(s) {unknown} for ERNIE-ViL; valid: {valid}"
            )


def _train_config(spec: StageSpec) -> TrainConfig:
    return TrainConfig(**spec.engine, seed=spec.model_run.seed)


def _model_and_tokenizer(
    spec: StageSpec, train_rows: list[tuple[str, str, int | None]], feature_dim: int
) -> tuple[ErnieVilForHatefulMemes, ErnieTokenizer, dict[str, Any]]:
    size = spec.params.get("size", "base")
    text_only = bool(spec.params.get("text_only", False))
    if "params_dir" in spec.params:  # the released params (the recipe's full table)
        name = str(spec.params["params_dir"]).rstrip("/")
        params_dir = spec.weight(name, "ERNIE-ViL params directory")
        if not params_dir.is_dir():
            raise MissingWeightsError(
                "not a directory; expected the params/ folder of the released tarball "
                "(recipes.toml [models.ES]/[models.EL] weights)",
                params_dir,
            )
        # the vocabulary released beside params/ (its own entry of the recipe's weights)
        vocab = spec.weight(str(Path(name).parent / "vocab.txt"), "ERNIE-ViL vocabulary")
        tokenizer = ErnieTokenizer.from_file(vocab)
        cfg = ErnieVilConfig.named(size, v_feature_size=feature_dim)
        model = ErnieVilForHatefulMemes(cfg, text_only=text_only)
        report = load_upstream_params(model, params_dir, spec.params.get("ignore_params", []))
        init = {
            "params_dir": str(params_dir),
            "loaded": len(report.loaded),
            "ignored": report.allowed_keys(IGNORED_REASON),
            "unused upstream heads": report.allowed_keys(HEADS_REASON),
            "random": report.allowed_keys(RANDOM_REASON),
        }
    else:  # a random model over a vocabulary trained on the training texts (smoke)
        vocab_size = int(spec.params.get("smoke_vocab_size", 1000))
        tokenizer = ErnieTokenizer.train((text for _, text, _ in train_rows), vocab_size)
        cfg = ErnieVilConfig.named(
            size, vocab_size=tokenizer.vocab_size, v_feature_size=feature_dim
        )
        model = ErnieVilForHatefulMemes(cfg, text_only=text_only)
        init = {"random": "all (no params_dir)"}
    init["config"] = asdict(cfg)
    return model, tokenizer, init


def text_limit(params: dict[str, Any], cfg: ErnieVilConfig) -> int:
    """Word pieces kept per text, [CLS] and [SEP] included. Upstream never truncates (its
    `max_seq_len` only declares a shape), so by default nothing is cut below the position table
    (512): there a longer text would fail upstream; here it is cut. A recipe may set less."""
    table = cfg.max_position_embeddings
    return min(int(params.get("max_len", table)), table)


def stage_device(spec: StageSpec) -> str:
    """Select the device the spec asks for (`paddle.set_device`) and name it. A CUDA request of
    a CPU-only paddle build, or with no GPU visible, is an error: never a silent CPU run."""
    if spec.device != "cuda":
        paddle.set_device("cpu")
        return "cpu"
    if not paddle.device.is_compiled_with_cuda():
        raise SpecError(
            f"stage {spec.stage}: spec asks for device cuda but this paddle "
            f"{paddle.__version__} is a CPU-only build (the paddlepaddle wheel): ES/EL on a GPU "
            "need paddlepaddle-gpu (README, Docker: GPUs), or run without --gpus"
        )
    if paddle.device.cuda.device_count() < 1:
        raise SpecError(
            f"stage {spec.stage}: spec asks for device cuda but paddle sees no GPU "
            "(check CUDA_VISIBLE_DEVICES / the compose device_ids)"
        )
    paddle.set_device("gpu:0")
    return f"gpu:0 ({paddle.device.cuda.get_device_name(0)})"


def train_stage(spec: StageSpec) -> None:
    """Fit on run.fit, predict run.predict, write predictions/, weights, logs, metrics."""
    out = spec.output_dir
    check_params(spec)
    device = stage_device(spec)
    cfg = _train_config(spec)
    seed_everything(cfg.seed)
    run = spec.model_run
    if run.fit is None:
        raise SpecError(f"stage {spec.stage}: a train stage's run needs a fit")
    fit_name, valid, predict_names = run.fit, run.valid, list(run.predict)
    main = open_store(spec.path("features"))
    extra = open_store(spec.path("extra_features")) if "extra_features" in spec.inputs else None
    max_regions = int(spec.params.get("max_regions", 100))
    rows = fit_rows(spec, fit_name)
    model, tokenizer, init = _model_and_tokenizer(spec, rows, main.feature_dim)
    max_len = text_limit(spec.params, model.ernie_vil.config)

    def inputs(name: str, rows: list[tuple[str, str, int | None]]) -> MemeInputs:
        return MemeInputs(rows, tokenizer, main, extra, max_len, max_regions, f"{name}.jsonl")

    train_data = inputs(fit_name, rows)
    log_path = out / "log.jsonl"

    def write_log(entries: list[dict[str, Any]]) -> None:
        atomic_write_text(log_path, "".join(json.dumps(e) + "\n" for e in entries))
        print(json.dumps(entries[-1]), flush=True)

    checkpoint = out / CHECKPOINT_DIR / CHECKPOINT_FILE
    log = fit(model, train_data, cfg, checkpoint, on_log=write_log)
    metrics: dict[str, Any] = {"fit": fit_name, "steps": cfg.steps, "init": init, "device": device}
    for name in dict.fromkeys([*predict_names, *([valid] if valid else [])]):
        data = inputs(name, _split(spec, name))
        proba = predict(model, data, cfg.eval_batch_size)
        if name in predict_names:
            write_split_predictions(out, name, data.ids, proba)
        scores = split_metrics(data.labels, proba) if name == valid else None
        if scores is not None:
            metrics[name] = scores
    log.append(
        {"event": "done", "step": cfg.steps, **{k: v for k, v in metrics.items() if k == valid}}
    )
    write_log(log)
    buffer = io.BytesIO()
    paddle.save(model.state_dict(), buffer)
    atomic_write_bytes(out / "model.pdparams", buffer.getvalue())
    atomic_write_text(out / "vocab.txt", tokenizer.vocab_text())
    atomic_write_json(out / "metrics.json", metrics)
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)  # outputs complete: drop the state


def _fit_model(spec: StageSpec, feature_dim: int) -> tuple[ErnieVilForHatefulMemes, ErnieTokenizer]:
    """The model and tokenizer a finished fit (input `fit`) saved: its vocab.txt and
    model.pdparams, in the config its train stage built from the same params."""
    fit_dir = spec.path("fit")
    for name in ("vocab.txt", "model.pdparams"):
        if not (fit_dir / name).is_file():
            raise HmDataError(f"no {name}; expected what the fit's train stage saved", fit_dir)
    tokenizer = ErnieTokenizer.from_file(fit_dir / "vocab.txt")
    size = spec.params.get("size", "base")
    # a fit without released params trained its vocabulary: the embedding table is its size
    trained = {} if "params_dir" in spec.params else {"vocab_size": tokenizer.vocab_size}
    cfg = ErnieVilConfig.named(size, v_feature_size=feature_dim, **trained)
    model = ErnieVilForHatefulMemes(cfg, text_only=bool(spec.params.get("text_only", False)))
    state = paddle.load(str(fit_dir / "model.pdparams"))
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise HmDataError(
            f"the weights do not fit the model this recipe builds: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}; was the recipe changed after training?",
            fit_dir / "model.pdparams",
        )
    model.set_state_dict(state)
    return model, tokenizer


def predict_stage(spec: StageSpec) -> None:
    """Score run.predict (input `prepared`: the new memes) with a finished fit (input `fit`);
    nothing is trained."""
    check_params(spec)
    device = stage_device(spec)
    cfg = _train_config(spec)
    main = open_store(spec.path("features"))
    extra = open_store(spec.path("extra_features")) if "extra_features" in spec.inputs else None
    max_regions = int(spec.params.get("max_regions", 100))
    model, tokenizer = _fit_model(spec, main.feature_dim)
    max_len = text_limit(spec.params, model.ernie_vil.config)
    for name in spec.model_run.predict:
        data = MemeInputs(
            _split(spec, name), tokenizer, main, extra, max_len, max_regions, f"{name}.jsonl"
        )
        proba = predict(model, data, cfg.eval_batch_size)
        write_split_predictions(spec.output_dir, name, data.ids, proba)
    atomic_write_json(spec.output_dir / "metrics.json", {"device": device})


__all__ = [
    "ENGINE_PARAMS",
    "TrainConfig",
    "batch_order",
    "check_params",
    "fit",
    "fit_rows",
    "make_optimizer",
    "predict",
    "predict_stage",
    "stage_device",
    "text_limit",
    "train_stage",
]
