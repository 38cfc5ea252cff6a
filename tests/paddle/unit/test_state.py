"""Paddle state files are read without running code, and a resume from one is exact."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import paddle
import pytest
from conftest import XorMemes

from hm_paddle.inputs import ErnieTokenizer, MemeInputs
from hm_paddle.model import ErnieVilConfig, ErnieVilForHatefulMemes
from hm_paddle.state import load_state
from hm_paddle.train import TrainConfig, fit, seed_everything
from hm_shared.errors import HmDataError
from hm_shared.safe_pickle import UnsafePickleError


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # what a hostile state file does on unpickling
        return (os.system, (f"touch {self.marker}",))


def _model_and_data(xor_train: XorMemes) -> tuple[ErnieVilForHatefulMemes, MemeInputs]:
    tok = ErnieTokenizer.train([t for _, t, _ in xor_train.rows], 100)
    seed_everything(0)
    cfg = ErnieVilConfig.tiny(vocab_size=tok.vocab_size, v_feature_size=16)
    data = MemeInputs(xor_train.rows, tok, xor_train.main, xor_train.extra)
    return ErnieVilForHatefulMemes(cfg), data


def test_a_state_file_that_runs_code_is_refused(tmp_path: Path, xor_train: XorMemes) -> None:
    marker = tmp_path / "ran"
    checkpoint = tmp_path / "state.pdckpt"
    checkpoint.write_bytes(pickle.dumps({"step": 1, "model": _RunsCode(marker)}))
    model, data = _model_and_data(xor_train)
    with pytest.raises(UnsafePickleError, match=r"state\.pdckpt: refused to load global"):
        fit(model, data, TrainConfig(steps=2, batch_size=8), checkpoint)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x80\x04garbage", r"not a readable pickle"),
        (pickle.dumps([1, 2]), r"holds a list; expected a paddle state dict"),
        (pickle.dumps({"step": 3}), r"missing \['model', 'optimizer', 'log'\]"),
    ],
)
def test_malformed_state_names_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "state.pdckpt").write_bytes(content)
    with pytest.raises(HmDataError, match=rf"state\.pdckpt: .*{message}"):
        load_state(tmp_path / "state.pdckpt", required=("step", "model", "optimizer", "log"))


def test_paddle_save_round_trips_as_arrays(tmp_path: Path) -> None:
    layer = paddle.nn.Linear(3, 2)
    buffer = io.BytesIO()
    paddle.save(layer.state_dict(), buffer)
    (tmp_path / "model.pdparams").write_bytes(buffer.getvalue())
    state = load_state(tmp_path / "model.pdparams")
    assert {"weight", "bias"} <= set(state)  # and paddle's name map "StructuredToParameterName@@"
    np.testing.assert_array_equal(state["weight"], layer.weight.numpy())
    fresh = paddle.nn.Linear(3, 2)
    fresh.set_state_dict(state)
    np.testing.assert_array_equal(fresh.bias.numpy(), layer.bias.numpy())


def test_resume_through_the_safe_reader_is_exact(tmp_path: Path, xor_train: XorMemes) -> None:
    cfg = TrainConfig(seed=0, lr=1e-3, warmup_steps=2, steps=6, batch_size=8, checkpoint_every=3)
    checkpoint = tmp_path / "state.pdckpt"
    # each run names its parameters (and so its optimiser state) afresh, as a new process does
    with paddle.utils.unique_name.guard():
        straight, data = _model_and_data(xor_train)
        fit(straight, data, cfg)
    with paddle.utils.unique_name.guard():
        first, data = _model_and_data(xor_train)
        fit(first, data, TrainConfig(**{**cfg.__dict__, "steps": 4}), checkpoint)  # saves at 3
    with paddle.utils.unique_name.guard():
        resumed, data = _model_and_data(xor_train)
        log = fit(resumed, data, cfg, checkpoint)
    assert {"event": "resumed", "step": 3} in log
    want, got = straight.state_dict(), resumed.state_dict()
    assert list(want) == list(got)
    for name in want:
        np.testing.assert_array_equal(got[name].numpy(), want[name].numpy(), err_msg=name)
