"""The image builds' names and locks (no Docker engine needed)."""

from __future__ import annotations

from pathlib import Path

from orchestrator import images

REPO = Path(__file__).resolve().parents[3]


def _pins(path: Path) -> set[str]:
    return set(images.pinned_lines(path))


def test_paddle_gpu_lock_is_the_cpu_lock_with_the_gpu_wheel_and_cuda_runtime() -> None:
    # Both images must run the same paddle API over the same closure: only the paddle wheel and
    # NVIDIA's CUDA 11.8 / cuDNN 8.6 runtime wheels (what PyPI's paddlepaddle-gpu 2.6.2 is built
    # against) may differ, or the GPU runs would be another environment than the one tested.
    cpu = _pins(images.lock_path(REPO, "paddle"))
    gpu = _pins(images.lock_path(REPO, "paddle-gpu"))
    assert images.lock_path(REPO, "paddle-gpu").name == "requirements-gpu.lock"
    assert cpu - gpu == {"paddlepaddle==2.6.2"}
    added = gpu - cpu
    assert "paddlepaddle-gpu==2.6.2" in added
    cuda = sorted(added - {"paddlepaddle-gpu==2.6.2"})
    assert cuda and all(p.startswith("nvidia-") and "-cu11==" in p for p in cuda), cuda
    assert "nvidia-cudnn-cu11==8.6.0.163" in cuda
    assert any(p.startswith("nvidia-cuda-runtime-cu11==11.8.") for p in cuda)


def test_only_paddle_has_a_gpu_image_of_its_own() -> None:
    assert images.gpu_image("paddle") == "paddle-gpu"
    assert images.gpu_image("torch") == "torch"  # torch wheels carry their CUDA libraries
    assert images.gpu_image("extract") == "extract"
    assert images.image_name("paddle-gpu", "latest") == "hm-paddle-gpu:latest"
    assert images.IMAGES == ("extract", "torch", "paddle", "paddle-gpu")
