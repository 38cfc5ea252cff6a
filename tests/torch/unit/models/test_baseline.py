"""Model B: shapes per branch, the strict ResNet-152 loader, weights and params errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from spec_helpers import make_spec
from torchvision.models import resnet152

from hm_shared.errors import HmDataError, MissingWeightsError, SpecError
from hm_shared.spec import StageSpec
from hm_torch.models.baseline import (
    RESNET152_URL,
    BaselineConfig,
    build_model,
    resnet152_encoder,
    resnet_weights_path,
)

RESNET152_FILE = "resnet152-f82ba261.pth"  # as torchvision names it (the recipe's checkpoint)
SMALL = {
    "backbone": "small_cnn",
    "small_cnn_width": 4,
    "image_size": 32,
    "text_dim": 10,
    "vision_dim": 6,
    "language_dim": 5,
    "fusion_dim": 7,
}


@pytest.mark.parametrize("modalities", ["both", "text", "image"])
def test_forward_gives_two_logits(modalities: str) -> None:
    model = build_model(BaselineConfig(**SMALL, modalities=modalities), weights=None)
    batch = {
        "image": torch.randn(3, 3, 32, 32),
        "text_vec": torch.randn(3, 10),
        "label": torch.zeros(3, dtype=torch.long),
    }
    if modalities == "text":
        del batch["image"]
        assert not any("image" in name or "vision" in name for name, _ in model.named_parameters())
    if modalities == "image":
        del batch["text_vec"]
    logits = model(batch)
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()
    expected_in = {"both": 11, "text": 5, "image": 6}[modalities]
    assert model.fusion.in_features == expected_in


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A full-size ResNet-152 with random weights, saved as torchvision publishes it."""
    torch.manual_seed(0)
    state = resnet152(weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / RESNET152_FILE
    torch.save(state, path)
    return path, state


def test_resnet152_file_loads_strictly(resnet_file: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, state = resnet_file
    encoder = resnet152_encoder(path)
    ours = encoder.state_dict()
    assert set(ours) == {k for k in state if not k.startswith("fc.")}
    for key, value in ours.items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)
    assert encoder(torch.randn(1, 3, 64, 64)).shape == (1, 2048)


def test_renamed_key_fails_naming_it(
    resnet_file: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    _, state = resnet_file
    renamed = dict(state)
    renamed["layer3.7.conv2.weights"] = renamed.pop("layer3.7.conv2.weight")
    path = tmp_path / RESNET152_FILE
    torch.save(renamed, path)
    with pytest.raises(HmDataError) as info:
        resnet152_encoder(path)
    message = str(info.value)
    assert str(path) in message
    assert "missing (the model expects, the file lacks): layer3.7.conv2.weight" in message
    assert "unexpected (in the file, nowhere to go): layer3.7.conv2.weights" in message


def _spec(tmp_path: Path, inputs: dict[str, str]) -> StageSpec:
    return make_spec("train/B/B42/train", tmp_path, output="out", inputs=inputs)


def test_missing_weights_name_file_and_url(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    config = BaselineConfig(checkpoint=RESNET152_FILE)
    given = {f"weights:{RESNET152_FILE}": f"weights/{RESNET152_FILE}"}
    with pytest.raises(MissingWeightsError) as info:
        resnet_weights_path(_spec(tmp_path, given), config)
    message = str(info.value)
    assert str(tmp_path / "weights" / RESNET152_FILE) in message and RESNET152_URL in message
    with pytest.raises(MissingWeightsError, match="not among the weight files the recipe gives"):
        resnet_weights_path(_spec(tmp_path, {}), config)
    with pytest.raises(MissingWeightsError, match=r"name the file in the param checkpoint"):
        resnet_weights_path(_spec(tmp_path, given), BaselineConfig())


def test_unknown_param_lists_the_valid_ones() -> None:
    with pytest.raises(
        SpecError, match=r"unknown model B param\(s\) \['fusion_size'\].*'fusion_dim'"
    ) as info:
        BaselineConfig.from_params({"fusion_size": 3}, "stage train/B")
    assert "engine params: [" in str(info.value) and "'lr'" in str(info.value)
