"""U, O, V, X and D learn a label that needs both modalities (text cue XOR image cue) with the
shared engine, while the text-only ablation (same model, zero regions) stays at chance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import Dataset

from hm_torch.engine import TrainConfig, Trainer, predict_proba
from hm_torch.models.devlbert import DevlbertConfig, DevlbertForHatefulMemes
from hm_torch.models.lxmert import LxmertConfig, LxmertForHatefulMemes
from hm_torch.models.oscar import OscarConfig, OscarForHatefulMemes
from hm_torch.models.uniter import UniterConfig, UniterForHatefulMemes
from hm_torch.models.visualbert import VisualBertConfig, VisualBertForHatefulMemes
from hm_torch.regions import collate_regions

CLS, SEP = 2, 3
CUE_TOKENS = (5, 6)  # the text cue is one of these two words, somewhere in the text
FEATURE_DIM, REGIONS = 64, 5


class XorMemes(Dataset[dict[str, Any]]):
    """label = text cue XOR image cue; the image cue shifts every region along one direction."""

    def __init__(self, n: int, seed: int, pos_dim: int, drop_regions: bool = False) -> None:
        g = torch.Generator().manual_seed(seed)
        direction = torch.randn(FEATURE_DIM, generator=torch.Generator().manual_seed(99))
        self.items = []
        for i in range(n):
            text_cue, image_cue = torch.randint(0, 2, (2,), generator=g).tolist()
            words = torch.randint(10, 100, (6,), generator=g).tolist()
            words.insert(int(torch.randint(0, 7, (1,), generator=g)), CUE_TOKENS[text_cue])
            sign = 1.0 if image_cue else -1.0
            count = 0 if drop_regions else REGIONS
            feats = torch.randn(count, FEATURE_DIM, generator=g) + sign * direction
            self.items.append(
                {
                    "id": f"{i:05d}",
                    "input_ids": [CLS, *words, SEP],
                    "token_type_ids": [0] * (len(words) + 2),
                    "img_feats": feats,
                    "img_pos": torch.rand(count, pos_dim, generator=g),
                    "label": text_cue ^ image_cue,
                }
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]

    def labels(self) -> list[int]:
        return [it["label"] for it in self.items]


def _uniter() -> nn.Module:
    return UniterForHatefulMemes(UniterConfig.tiny().replace(img_dim=FEATURE_DIM))


def _oscar() -> nn.Module:
    return OscarForHatefulMemes(OscarConfig.tiny().replace(feature_dim=FEATURE_DIM))


def _visualbert() -> nn.Module:
    return VisualBertForHatefulMemes(
        VisualBertConfig.tiny().replace(visual_embedding_dim=FEATURE_DIM)
    )


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # Tiny models gain nothing from intra-op threads, and on a loaded 2-core machine two
    # threads made each step ~100× slower (2.3 s vs 25 ms) through oversubscription.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _lxmert() -> nn.Module:
    return LxmertForHatefulMemes(LxmertConfig.tiny().replace(visual_feat_dim=FEATURE_DIM))


def _devlbert() -> nn.Module:
    return DevlbertForHatefulMemes(DevlbertConfig.tiny().replace(v_feature_size=FEATURE_DIM))


# name → (builder, box-vector width, learning rate). X's cue interaction must form in its one
# cross-modality layer: at 1e-3 the tiny X memorised the training memes instead (train AUROC
# 0.95, dev 0.44 after 30 epochs); at 2e-3–3e-3 it finds the XOR (dev 0.99–1.0) from some
# initialisations and not others (3 of 6 seeds measured), like a tiny U at 1e-3 (dev 0.88 at
# seeds 1 and 2, 0.9+ at 0). The seeds here are fixed, so the outcome is too.
MODELS = {
    "uniter": (_uniter, 7, 1e-3),
    "oscar": (_oscar, 4, 1e-3),
    "visualbert": (_visualbert, 0, 1e-3),
    "lxmert": (_lxmert, 4, 3e-3),
    "devlbert": (_devlbert, 4, 1e-3),
}


def _dev_auroc(name: str, tmp_path: Path, drop_regions: bool) -> float:
    build, pos_dim, lr = MODELS[name]
    torch.manual_seed(0)
    model = build()
    train = XorMemes(512, seed=1, pos_dim=pos_dim, drop_regions=drop_regions)
    dev = XorMemes(200, seed=2, pos_dim=pos_dim, drop_regions=drop_regions)
    config = TrainConfig(
        epochs=12,
        batch_size=16,
        lr=lr,
        warmup=0.1,
        clip=5.0,
        seed=0,
        checkpoint_every=0,
        head_lr_mult=1.0,
    )
    trainer = Trainer(model, config, collate_regions, work_dir=tmp_path / name)
    final = trainer.fit(train, dev)
    proba = predict_proba(final, dev, collate_regions)
    return float(roc_auc_score(dev.labels(), proba))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_multimodal_beats_text_only(name: str, tmp_path: Path) -> None:
    both = _dev_auroc(name, tmp_path / "both", drop_regions=False)
    text_only = _dev_auroc(name, tmp_path / "text", drop_regions=True)
    assert both >= 0.9, f"{name}: dev AUROC {both:.3f} with regions"
    assert text_only <= 0.65, f"{name}: text-only dev AUROC {text_only:.3f}"
