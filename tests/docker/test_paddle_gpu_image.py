"""paddle's GPU image (`./hm images paddle-gpu`): what `--runtime docker --gpus` runs ES/EL in.

No GPU here: the tests check what can be checked without one: compose wires the GPU service to
that image, the image holds the CUDA build of paddle and every CUDA library it opens by name
loads, and a stage asking for cuda gets past the CPU-build check to the "no GPU" error.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from docker_helpers import COMPOSE_FILE, REPO

from orchestrator import images
from orchestrator.runtimes import RuntimeConfig, make_runtime

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

# What paddle's dynamic loader opens (unversioned, from LD_LIBRARY_PATH); libcuda.so.1 is the
# driver's, mounted by the NVIDIA Container Toolkit at run time.
CUDA_LIBRARIES = (
    "libcudart.so",
    "libcudnn.so",
    "libcublas.so",
    "libcublasLt.so",
    "libcusolver.so",
    "libcusparse.so",
    "libcurand.so",
    "libcufft.so",
    "libnvrtc.so",
)
PROBE = f"""
import ctypes, json, paddle
loaded = {{}}
for name in {CUDA_LIBRARIES!r}:
    try:
        ctypes.CDLL(name)
        loaded[name] = "ok"
    except OSError as exc:
        loaded[name] = str(exc)
print(json.dumps({{"cuda": paddle.device.is_compiled_with_cuda(),
                  "cuda_version": paddle.version.cuda(), "cudnn_version": paddle.version.cudnn(),
                  "loaded": loaded}}))
"""
NO_GPU = """
from hm_shared.errors import SpecError
from hm_shared.spec import StageSpec
from hm_paddle.train import stage_device
spec = StageSpec(stage="train/ES/ES36/train", kind="train", env="paddle", data_root="/data",
                 output="work/x", inputs={}, params={}, profile="smoke", device="cuda")
try:
    stage_device(spec)
except SpecError as exc:
    print(exc)
"""


@pytest.fixture(scope="module")
def gpu_image() -> str:
    image = images.image_id("paddle-gpu")
    if image is None:
        pytest.fail("hm-paddle-gpu is not built: run `./hm images paddle-gpu`", pytrace=False)
    return image


def _python(image: str, code: str) -> str:
    done = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "python", image, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_compose_gpu_services_name_their_images() -> None:
    done = subprocess.run(
        [
            "docker",
            "compose",
            "-f",
            str(COMPOSE_FILE),
            "--profile",
            "gpu",
            "--profile",
            "stages",
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**images.compose_env(), "HM_IMAGE_TAG": "latest"},
    )
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    assert services["paddle-gpu"]["image"] == "hm-paddle-gpu:latest"
    gpu_args = services["paddle-gpu"]["build"]["args"]
    assert gpu_args["LOCK"] == "requirements-gpu.lock" and gpu_args["HM_ENV"] == "paddle"
    # the CPU and GPU paddle images differ only by their lock
    assert {**services["paddle"]["build"]["args"], "LOCK": "requirements-gpu.lock"} == gpu_args
    assert "nvidia/cudnn/lib" in gpu_args["CUDA_LIBRARY_PATH"]
    assert services["torch-gpu"]["image"] == "hm-torch:latest"  # torch wheels carry their CUDA
    assert services["extract-gpu"]["image"] == "hm-extract:latest"
    for name in ("paddle-gpu", "torch-gpu", "extract-gpu"):
        (device,) = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert (device["driver"], device["capabilities"]) == ("nvidia", ["gpu"]), name


def test_gpu_image_holds_paddle_built_for_cuda_and_its_libraries(gpu_image: str) -> None:
    probe = json.loads(_python(gpu_image, PROBE))
    assert probe["cuda"] is True
    assert (probe["cuda_version"], probe["cudnn_version"]) == ("11.8", "8.6.0")
    assert probe["loaded"] == dict.fromkeys(CUDA_LIBRARIES, "ok")


def test_a_cuda_stage_without_a_gpu_is_refused_as_such(gpu_image: str) -> None:
    # the CPU image says "CPU-only build"; the GPU image gets past that to the missing GPU
    message = _python(gpu_image, NO_GPU)
    assert "paddle sees no GPU" in message, message


def test_runtime_checks_the_gpu_image_when_gpus_are_leased() -> None:
    runtime = make_runtime("docker", RuntimeConfig(repo=REPO, venvs=REPO / ".venvs"))
    runtime.gpu_leases = True  # what check_gpus sets when --gpus passes the pre-flight
    info = runtime.ensure("paddle", lambda _: None)
    assert info.image == images.image_id("paddle-gpu")
    torch = runtime.ensure("torch", lambda _: None)
    assert torch.image == images.image_id("torch")
