"""`--gpus`: indices become UUIDs before any stage is leased one.

**Why UUIDs:** nvidia-smi numbers GPUs in PCI bus order while CUDA numbers them fastest first
(`CUDA_DEVICE_ORDER=FASTEST_FIRST`), so on a mixed machine "GPU 1" can name two different cards;
a UUID is the same card for nvidia-smi, CUDA_VISIBLE_DEVICES and Compose's `device_ids`.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable

from orchestrator.errors import GpuError

QUERY = ["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"]


def list_gpus() -> dict[str, str] | None:
    """index → UUID of every GPU nvidia-smi sees, or None when nvidia-smi is not installed."""
    if shutil.which(QUERY[0]) is None:
        return None
    out = subprocess.run(QUERY, capture_output=True, text=True)
    if out.returncode != 0:
        raise GpuError(f"`{' '.join(QUERY)}` failed: {out.stderr.strip() or out.stdout.strip()}")
    gpus: dict[str, str] = {}
    for line in out.stdout.splitlines():
        index, _, uuid = (part.strip() for part in line.partition(","))
        if index and uuid:
            gpus[index] = uuid
    return gpus


def resolve_gpus(gpus: tuple[str, ...]) -> tuple[str, ...]:
    """Replace GPU indices by their UUIDs (UUIDs pass through).

    Without nvidia-smi the values are kept as given (CUDA and Compose accept indices too). An
    index or UUID that nvidia-smi does not list is a `GpuError` naming the GPUs it does list.
    """
    if not gpus:
        return gpus
    known = list_gpus()
    if known is None:
        return gpus
    uuids = set(known.values())
    resolved = []
    for gpu in gpus:
        if gpu in known:
            resolved.append(known[gpu])
        elif gpu in uuids:
            resolved.append(gpu)
        else:
            listed = ", ".join(f"{i}={u}" for i, u in known.items()) or "none"
            raise GpuError(f"--gpus names {gpu!r}, which nvidia-smi does not list; GPUs: {listed}")
    if len(set(resolved)) != len(resolved):
        raise GpuError(f"--gpus names the same GPU twice: {', '.join(gpus)}")
    return tuple(resolved)


TOOLKIT = (
    "install the NVIDIA Container Toolkit (package nvidia-container-toolkit), run `sudo nvidia-ctk "
    "runtime configure --runtime=docker` and restart dockerd"
)


def docker_gpu_problem(
    runtimes: Iterable[str], hook_found: bool, known: dict[str, str] | None, gpus: Iterable[str]
) -> str | None:
    """Why the Docker engine cannot give these GPUs to containers (None: it can).

    `runtimes`: the engine's runtimes (`docker info`); `hook_found`: the NVIDIA container hook is
    installed (the engine offers the `nvidia` device driver then); `known`: nvidia-smi's index →
    UUID, None without nvidia-smi. Checked before any stage: otherwise the daemon's `could not
    select device driver "nvidia"` appears only once the first GPU stage starts."""
    if known is None:
        return "--gpus needs the NVIDIA driver on this machine, and nvidia-smi is not installed"
    if not known:
        return "--gpus names GPUs, and nvidia-smi lists none on this machine"
    if "nvidia" not in set(runtimes) and not hook_found:
        return f"the Docker engine cannot hand GPUs to containers: {TOOLKIT}"
    listed = ", ".join(f"{i}={u}" for i, u in known.items())
    for gpu in gpus:
        if gpu not in known and gpu not in known.values():
            return f"--gpus names {gpu!r}, which nvidia-smi does not list; GPUs: {listed}"
    return None
