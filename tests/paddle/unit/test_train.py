"""Training recipe pieces and learning on data that needs both modalities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import XorMemes, write_prepared_split
from spec_helpers import make_spec

from hm_paddle.inputs import ErnieTokenizer, MemeInputs
from hm_paddle.model import ErnieVilConfig, ErnieVilForHatefulMemes
from hm_paddle.train import (
    TrainConfig,
    batch_order,
    fit,
    fit_rows,
    make_optimizer,
    predict,
    seed_everything,
    text_limit,
)
from hm_shared.metrics import auroc
from hm_shared.spec import StageSpec


def test_warmup_then_constant_one_step_behind_as_upstream() -> None:
    # fluid's step counter is 0 at the first update: update k uses (k - 1) / 500 of the peak
    cfg = TrainConfig()
    assert cfg.lr_at(1) == 0.0
    assert cfg.lr_at(2) == pytest.approx(2e-8)
    assert cfg.lr_at(251) == pytest.approx(5e-6)
    assert cfg.lr_at(500) == pytest.approx(1e-5 * 499 / 500)
    assert cfg.lr_at(501) == cfg.lr_at(2500) == 1e-5


def test_batch_order_covers_each_epoch_once() -> None:
    cfg = TrainConfig(seed=3, batch_size=4)
    epoch = [i for step in range(3) for i in batch_order(10, cfg, step)]
    assert sorted(epoch) == list(range(10))
    assert batch_order(10, cfg, 5) == batch_order(10, cfg, 5)
    assert batch_order(10, cfg, 0) != batch_order(10, cfg, 3)  # a new permutation per epoch


def test_weight_decay_skips_layer_norm_and_bias() -> None:
    model = ErnieVilForHatefulMemes(ErnieVilConfig.tiny())
    opt = make_optimizer(model, TrainConfig())
    named = dict(model.named_parameters())
    decays = {n: opt._apply_decay_param_fun(p.name) for n, p in named.items()}
    assert decays["ernie_vil.encoder_layer.0.ffn.fc_0.weight"]
    assert decays["ernie_vil.word_embedding.weight"]
    assert not decays["ernie_vil.encoder_layer.0.ffn.fc_0.bias"]
    assert not decays["ernie_vil.encoder_colayer.1.vl_post_ffn_layer_norm.weight"]


def _dev_auroc(train: XorMemes, dev: XorMemes, text_only: bool) -> float:
    tok = ErnieTokenizer.train([t for _, t, _ in train.rows], 100)
    seed_everything(0)
    cfg = ErnieVilConfig.tiny(vocab_size=tok.vocab_size, v_feature_size=16)
    model = ErnieVilForHatefulMemes(cfg, text_only=text_only)
    recipe = TrainConfig(seed=0, lr=1e-3, warmup_steps=20, steps=160, batch_size=16)
    fit(model, MemeInputs(train.rows, tok, train.main, train.extra), recipe)
    proba = predict(model, MemeInputs(dev.rows, tok, dev.main, dev.extra), 64)
    return auroc(np.array([y for *_, y in dev.rows]), proba)


@pytest.mark.slow
def test_needs_both_modalities(xor_train: XorMemes, xor_dev: XorMemes) -> None:
    assert _dev_auroc(xor_train, xor_dev, text_only=False) >= 0.9
    assert _dev_auroc(xor_train, xor_dev, text_only=True) <= 0.65


def test_texts_are_not_cut_below_the_position_table() -> None:
    # upstream's max_seq_len only declares a shape: a 200-piece text reaches the model whole
    base = ErnieVilConfig.base()
    assert text_limit({}, base) == base.max_position_embeddings == 512
    assert text_limit({"max_len": 2048}, base) == 512  # longer would crash upstream; cut here
    assert text_limit({"max_len": 64}, base) == 64
    tiny = ErnieVilConfig.tiny()
    assert text_limit({"max_len": 512}, tiny) == tiny.max_position_embeddings
    words = " ".join(f"w{i % 7}" for i in range(200))
    tok = ErnieTokenizer.train([words], 40)
    assert len(tok.encode(words, text_limit({}, base))) == len(tok.encode(words, 10_000))


def test_ernie_traindev_repeats_dev_seen_as_upstream(tmp_path: Path) -> None:
    # ERNIE-ViL's data script: traindev = [dev_seen, train, dev_unseen, dev_seen]
    prepared = tmp_path / "work" / "prepared"
    train = [("00001", "a", 0), ("00002", "b", 1)]
    dev_seen = [("00003", "c", 1)]
    write_prepared_split(prepared / "traindev.jsonl", train + dev_seen)
    write_prepared_split(prepared / "dev_seen.jsonl", dev_seen)
    write_prepared_split(prepared / "train.jsonl", train)

    def spec(**params: object) -> StageSpec:
        return make_spec(
            "train/ES/ES36/traindev",
            tmp_path,
            output="work/out",
            inputs={"prepared": "work/prepared"},
            params=params,
        )

    ids = [meme for meme, _, _ in fit_rows(spec(), "traindev")]
    assert sorted(ids) == ["00001", "00002", "00003", "00003"]
    assert [m for m, _, _ in fit_rows(spec(repeat_dev_seen=False), "traindev")] == [
        "00001",
        "00002",
        "00003",
    ]
    assert len(fit_rows(spec(), "train")) == 2  # the train fit is untouched
