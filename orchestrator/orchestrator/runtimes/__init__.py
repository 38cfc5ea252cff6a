"""Runtimes run a stage process in its environment (docs/architecture.md §5).

The registry is an explicit dict of module paths, imported on first use, so a runtime whose
module is absent (or whose tools are missing) is a clear error only when it is selected.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import signal
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.datadir import DataDir
from orchestrator.errors import RuntimeUnavailable

Say = Callable[[str], None]

RUNTIMES: dict[str, str] = {
    "local": "orchestrator.runtimes.local:LocalRuntime",
    "docker": "orchestrator.runtimes.docker:DockerRuntime",
}


@dataclass(frozen=True)
class RuntimeConfig:
    repo: Path  # holds shared/, containers/, compose.yaml
    venvs: Path  # root of the local virtualenvs (.venvs)


@dataclass(frozen=True)
class EnvInfo:
    lock_sha256: str
    image: str | None = None  # the image id under docker; None for virtualenvs


class Runtime(ABC):
    """`ensure(env)` makes an environment ready; `start(...)` launches one stage process."""

    name: str

    def __init__(self, config: RuntimeConfig):
        self.config = config

    @abstractmethod
    def ensure(self, env: str, say: Say) -> EnvInfo:
        """Build or check the environment `env`; return its lock hash and image id."""

    @abstractmethod
    def data_root(self, data: DataDir, env: str) -> str:
        """The data root as the stage process sees it (goes into spec.data_root)."""

    @abstractmethod
    def command(self, env: str, verb: str, spec_path: Path, data: DataDir) -> list[str]:
        """argv that runs `python -m hm_<env> <verb> --spec <spec_path>` in the environment."""

    def check_gpus(self, gpus: tuple[str, ...]) -> None:  # noqa: B027 (most runtimes: no check)
        """Before any stage: raise GpuError when this runtime cannot hand `gpus` to stages.
        The local runtime passes CUDA_VISIBLE_DEVICES; a stage then fails naming a GPU it
        cannot see."""

    def environ(self, gpu: str | None) -> dict[str, str]:
        # Exactly one GPU visible (or none), so `cuda` means cuda:0 inside the stage.
        return {**os.environ, "CUDA_VISIBLE_DEVICES": gpu or "", "PYTHONUNBUFFERED": "1"}

    def job(
        self, env: str, verb: str, spec_path: Path, data: DataDir
    ) -> tuple[list[str], dict[str, str], list[str] | None]:
        """What a batch job (`--executor slurm`) runs: argv, environment, and the argv that
        stops the stage when the job is cancelled (None: signals reach the stage itself). The
        scheduler chooses the GPU, so none is named here."""
        return self.command(env, verb, spec_path, data), self.environ(None), None

    def start(
        self, env: str, verb: str, spec_path: Path, log_path: Path, gpu: str | None, data: DataDir
    ) -> subprocess.Popen[bytes]:
        """Launch the stage; stdout and stderr are appended to `log_path`."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                self.command(env, verb, spec_path, data),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environ(gpu),
                cwd=data.root,
                preexec_fn=_die_with_parent(os.getpid()),
            )

    def run(
        self, env: str, verb: str, spec_path: Path, log_path: Path, gpu: str | None, data: DataDir
    ) -> int:
        return self.start(env, verb, spec_path, log_path, gpu, data).wait()


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """preexec_fn: the kernel kills the stage when the orchestrator dies, even by SIGKILL, so
    a rerun never finds a stray stage still writing into the attempt dir it resumes."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def arm() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the orchestrator died before prctl took effect
            os._exit(1)

    return arm


def make_runtime(name: str, config: RuntimeConfig) -> Runtime:
    """Instantiate a runtime by name; absent modules give a RuntimeUnavailable naming them."""
    if name not in RUNTIMES:
        raise RuntimeUnavailable(f"unknown runtime {name!r}; known: {', '.join(RUNTIMES)}")
    module_name, _, class_name = RUNTIMES[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        path = module_name.replace(".", "/") + ".py"
        raise RuntimeUnavailable(
            f"the {name} runtime is not available in this checkout ({path} is missing); "
            "use --runtime local"
        ) from None
    runtime: Runtime = getattr(module, class_name)(config)
    return runtime
