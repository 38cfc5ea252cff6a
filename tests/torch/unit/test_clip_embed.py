"""The embed stage's encoder against `transformers.CLIPModel` on the same weights: loading a
Hugging Face checkpoint folder strictly, and the four columns per meme, batched and padded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

from hm_shared.errors import HmDataError, MissingWeightsError
from hm_torch.clip_embed import (
    COLUMNS,
    EmbedConfig,
    EmbeddingStore,
    build_encoder,
    tiny_clip,
    tiny_tokenizer,
    write_store,
)

TINY = EmbedConfig(tiny=True, image_size=32, tiny_width=32, tiny_layers=2, tiny_seed=7)
TEXTS = [
    "a",
    "its their fault for being born",
    "look how many people love you " * 30,  # far past 77 tokens: truncated
    "Hello, WORLD!  1999",
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CLIP checkpoint folder as the Hub has it (config, safetensors, tokenizer, processor),
    of a tiny random model."""
    folder = tmp_path_factory.mktemp("weights") / "clip-tiny"
    tiny_clip(TINY).save_pretrained(folder)
    tiny_tokenizer(folder)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(folder)
    return folder


def _pictures() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    sizes = [(40, 60), (300, 200), (32, 32), (75, 33)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def test_columns_equal_clipmodel_features_per_item(checkpoint: Path, tmp_path: Path) -> None:
    config = EmbedConfig(model_dir=checkpoint.name, image_size=32)
    encoder = build_encoder(config, checkpoint, tmp_path)
    pictures = _pictures()
    columns = encoder.encode(encoder.inputs(pictures, TEXTS), torch.device("cpu"))
    assert encoder.inputs(pictures, TEXTS)["input_ids"].shape[1] == 77  # padded to the longest

    reference = CLIPModel.from_pretrained(checkpoint).eval()
    tokenizer = CLIPTokenizer.from_pretrained(checkpoint)
    processor = CLIPImageProcessor.from_pretrained(checkpoint)
    for row, (picture, text) in enumerate(zip(pictures, TEXTS, strict=True)):
        # Hate-CLIPper: PIL squash to image_size², then the processor; one item, no padding
        square = picture.convert("RGB").resize((32, 32))
        pixels = processor(images=[square], return_tensors="pt")["pixel_values"]
        tokens = tokenizer([text], truncation=True, max_length=77, return_tensors="pt")
        with torch.no_grad():
            image = reference.get_image_features(pixel_values=pixels)
            words = reference.get_text_features(**tokens)
            expected = {
                # pre-projection: the post-layernorm CLS, the final-layernorm end token
                "image_pooled": reference.vision_model.post_layernorm(
                    image.last_hidden_state[:, 0]
                ),
                "text_pooled": words.last_hidden_state[0, tokens["input_ids"][0].argmax()][None],
                "image_embeds": image.pooler_output,
                "text_embeds": words.pooler_output,
            }
        for name in COLUMNS:
            np.testing.assert_allclose(
                columns[name][row], expected[name][0].detach().numpy(), atol=1e-5, err_msg=name
            )


def test_long_texts_keep_their_first_75_tokens(tmp_path: Path) -> None:
    encoder = build_encoder(TINY, None, tmp_path)
    ids = encoder.inputs(_pictures()[:1], [TEXTS[2]])["input_ids"][0].tolist()
    assert len(ids) == 77
    assert ids[0] == encoder.tokenizer.bos_token_id and ids[-1] == encoder.tokenizer.eos_token_id
    full = encoder.tokenizer(TEXTS[2])["input_ids"]
    assert ids[1:76] == full[1:76]


def test_a_missing_file_names_it_and_the_fetch_command(checkpoint: Path, tmp_path: Path) -> None:
    partial = tmp_path / "clip-tiny"
    partial.mkdir()
    (partial / "config.json").write_bytes((checkpoint / "config.json").read_bytes())
    with pytest.raises(MissingWeightsError, match=r"model\.safetensors.*weights fetch"):
        build_encoder(EmbedConfig(), tmp_path / "clip-tiny", tmp_path / "work")


def test_a_renamed_weight_is_an_error_naming_the_key(checkpoint: Path, tmp_path: Path) -> None:
    copy = tmp_path / "clip-tiny"
    copy.mkdir()
    for item in checkpoint.iterdir():
        (copy / item.name).write_bytes(item.read_bytes())
    state = load_file(checkpoint / "model.safetensors")
    state["text_projection.renamed"] = state.pop("text_projection.weight")
    save_file(state, copy / "model.safetensors")
    with pytest.raises(HmDataError, match=r"text_projection\.weight.*text_projection\.renamed"):
        build_encoder(EmbedConfig(), tmp_path / "clip-tiny", tmp_path / "work")


def test_the_store_reads_back_rows_by_id_and_names_absent_ones(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rows = {
        key: {name: rng.standard_normal(4 + i).astype(np.float32) for i, name in enumerate(COLUMNS)}
        for key in ("00012", "00003", "00500")
    }
    meta = {"model": "test", "image_size": "32", "text_max_length": "77"}
    write_store(tmp_path / "embeddings.safetensors", rows, meta)
    first = (tmp_path / "embeddings.safetensors").read_bytes()
    for _ in range(8):  # the library orders metadata by a random hash map: ours is sorted
        write_store(tmp_path / "embeddings.safetensors", rows, meta)
        assert (tmp_path / "embeddings.safetensors").read_bytes() == first
    store = EmbeddingStore.open(tmp_path)
    assert store.ids == ["00003", "00012", "00500"] and store.meta["model"] == "test"
    picked = store.rows(["00500", "00003"], "here")
    np.testing.assert_array_equal(
        store.columns["text_pooled"][picked[0]], rows["00500"]["text_pooled"]
    )
    with pytest.raises(HmDataError, match="00404"):
        store.rows(["00404"], "here")
