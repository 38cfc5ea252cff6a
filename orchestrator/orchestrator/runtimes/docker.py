"""The docker runtime: the same stage specs, run by `docker compose run --rm -T <service>`.

The data directory is bind-mounted at /data (compose.yaml), so the spec's data root is /data and
every path in it stays relative. The checked-out sources of hm_shared and hm_<env> are mounted
read-only over the copies baked into the image: the image provides the locked environment, the
code that runs is the code whose hash is in the cache key, exactly as under the local runtime.
Host stages (prepare, average, ensemble, report) run with the orchestrator's interpreter.

Stopping a stage: the `docker compose run` client neither forwards SIGTERM nor SIGINT to the
container (Compose v2.40: the client exits at once, the container runs on). So every stage
container gets a unique name and a label naming its attempt directory; `terminate`/`kill` of the
process that `start` returns signal the container by name, the client runs in its own session
(a terminal's Ctrl-C reaches only the orchestrator, which then stops the stage), and a container
left running by a SIGKILLed orchestrator is removed before its attempt directory is reused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from hm_shared.io import sha256_file
from orchestrator import images
from orchestrator.cache import lock_file
from orchestrator.datadir import DataDir
from orchestrator.errors import GpuError, RuntimeUnavailable
from orchestrator.gpus import docker_gpu_problem, list_gpus
from orchestrator.runtimes import EnvInfo, Runtime, Say

CONTAINER_DATA = "/data"
ATTEMPT_LABEL = "org.hateful-memes.attempt"  # absolute host path of the stage's attempt dir


def _docker_quiet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True)


def remove_stale_containers(attempt: Path) -> list[str]:
    """Remove (killing them first) containers still running on `attempt`; return their ids."""
    found = _docker_quiet("ps", "-aq", "--filter", f"label={ATTEMPT_LABEL}={attempt}")
    stale = found.stdout.split()
    if stale:
        _docker_quiet("rm", "--force", *stale)
    return stale


class ContainerProcess(subprocess.Popen[bytes]):
    """The `docker compose run` client of one stage; stopping it stops its container."""

    container = ""

    def terminate(self) -> None:
        # SIGTERM reaches the stage through the container's init; the client then exits with
        # the stage's code. Before the container exists, stopping the client is all there is.
        if (
            self.poll() is None
            and _docker_quiet("kill", "--signal", "TERM", self.container).returncode != 0
        ):
            super().terminate()

    def kill(self) -> None:
        _docker_quiet("rm", "--force", self.container)
        if self.poll() is None:
            super().kill()


class DockerRuntime(Runtime):
    name = "docker"
    gpu_leases = False  # set by check_gpus: the stages will run the GPU services

    def ensure(self, env: str, say: Say) -> EnvInfo:
        want = sha256_file(lock_file(self.config.repo, env))
        if env == "host":
            return EnvInfo(want)
        try:
            images.check_docker()
        except images.DockerUnavailable as exc:
            raise RuntimeUnavailable(str(exc)) from None
        # With GPU leases an environment's stages run its GPU service, whose image may be
        # another build (paddle-gpu); the cache key keeps the environment's own lock.
        image_kind = images.gpu_image(env) if self.gpu_leases else env
        lock = images.lock_path(self.config.repo, image_kind)
        name = images.image_name(image_kind)  # honours HM_IMAGE_TAG, as compose.yaml does
        image = images.image_id(image_kind)
        if image is None:
            raise RuntimeUnavailable(
                f"the image {name} is not built: run `./hm images {image_kind}` "
                f"(or `orchestrator images build {image_kind}`) first"
            )
        baked = subprocess.run(
            ["docker", "run", "--rm", "--entrypoint", "sha256sum", image, "/opt/requirements.lock"],
            capture_output=True,
            text=True,
        )
        if baked.returncode != 0 or baked.stdout.split()[:1] != [sha256_file(lock)]:
            relative = lock.relative_to(self.config.repo)
            raise RuntimeUnavailable(
                f"the image {name} was built from another {relative}: "
                f"rebuild it with `./hm images {image_kind}` "
                f"(or `orchestrator images build {image_kind}`)"
            )
        return EnvInfo(want, image=image)

    def check_gpus(self, gpus: tuple[str, ...]) -> None:
        self.gpu_leases = bool(gpus)
        if not gpus:
            return
        try:
            images.check_docker()
        except images.DockerUnavailable as exc:
            raise RuntimeUnavailable(str(exc)) from None
        info = _docker_quiet("info", "--format", "{{json .Runtimes}}")
        try:
            runtimes = json.loads(info.stdout or "{}") or {}
        except ValueError:
            runtimes = {}
        hook = shutil.which("nvidia-container-runtime-hook") is not None
        problem = docker_gpu_problem(runtimes, hook, list_gpus(), gpus)
        if problem:
            raise GpuError(f"--runtime docker --gpus {','.join(gpus)}: {problem}")

    def data_root(self, data: DataDir, env: str = "") -> str:
        return str(data.root) if env == "host" else CONTAINER_DATA

    def command(self, env: str, verb: str, spec_path: Path, data: DataDir) -> list[str]:
        if env == "host":  # `Runtime.start` runs host stages with this interpreter
            return [sys.executable, "-m", "hm_shared", verb, "--spec", str(spec_path)]
        return self._container_run(env, verb, spec_path, data, None)[0]

    def _container_run(
        self, env: str, verb: str, spec_path: Path, data: DataDir, gpu: str | None
    ) -> tuple[list[str], dict[str, str], str]:
        """argv, environment and container name of one stage's `docker compose run`."""
        # The service name carries the GPU choice: <env>-gpu reserves HM_GPU through device_ids.
        service = f"{env}-gpu" if gpu else env
        environ = {**os.environ, "PYTHONUNBUFFERED": "1"}
        environ.update(
            HOST_UID=str(os.getuid()),
            HOST_GID=str(os.getgid()),
            DATA_DIR=str(data.root.resolve()),
            HM_GPU=gpu or "",
        )
        attempt = spec_path.resolve().parent
        # attempt dirs are .attempts/<slug>/<key12>: the name says which stage a container runs
        container = f"hm-{attempt.parent.name}-{attempt.name}-{uuid.uuid4().hex[:8]}"
        run_options = ["--name", container, "--label", f"{ATTEMPT_LABEL}={attempt}"]
        return self._argv(env, verb, spec_path, data, service, run_options), environ, container

    def _argv(
        self,
        env: str,
        verb: str,
        spec_path: Path,
        data: DataDir,
        service: str,
        run_options: list[str],
    ) -> list[str]:
        relative = spec_path.resolve().relative_to(data.root.resolve())
        repo = self.config.repo
        return [
            "docker", "compose", "-f", str(repo / "compose.yaml"), "run", "--rm", "-T",
            "-v", f"{repo / 'shared'}:/opt/src/shared:ro",
            "-v", f"{repo / 'containers' / env}:/opt/src/containers/{env}:ro",
            *run_options, service, verb, "--spec", f"{CONTAINER_DATA}/{relative.as_posix()}",
        ]  # fmt: skip

    def job(
        self, env: str, verb: str, spec_path: Path, data: DataDir
    ) -> tuple[list[str], dict[str, str], list[str] | None]:
        # The compose client forwards no signal: a cancelled job stops its container by name.
        # GPU jobs are not supported here yet (the service must name the GPU SLURM chose).
        argv, environ, container = self._container_run(env, verb, spec_path, data, None)
        return argv, environ, ["docker", "kill", "--signal", "TERM", container]

    def start(
        self, env: str, verb: str, spec_path: Path, log_path: Path, gpu: str | None, data: DataDir
    ) -> subprocess.Popen[bytes]:
        if env == "host":
            return super().start(env, verb, spec_path, log_path, gpu, data)
        attempt = spec_path.resolve().parent
        remove_stale_containers(attempt)  # a killed orchestrator's stage must not write on
        argv, environ, container = self._container_run(env, verb, spec_path, data, gpu)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            proc = ContainerProcess(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environ,
                cwd=data.root,
                start_new_session=True,
            )
        proc.container = container
        return proc
