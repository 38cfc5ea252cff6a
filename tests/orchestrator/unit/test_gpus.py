"""GPU indices become UUIDs. No GPU here: a stand-in nvidia-smi prints what the real one
prints for `--query-gpu=index,uuid --format=csv,noheader`."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from orchestrator.errors import GpuError
from orchestrator.gpus import docker_gpu_problem, resolve_gpus

UUIDS = ["GPU-5a1f0c2e-0000-4b1e-9c1d-000000000000", "GPU-77e2b3d4-1111-4c2f-8d2e-111111111111"]


@pytest.fixture
def nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "bin" / "nvidia-smi"
    script.parent.mkdir()
    lines = "".join(f"{i}, {u}\\n" for i, u in enumerate(UUIDS))
    script.write_text(
        "#!/bin/sh\n"
        '[ "$1" = --query-gpu=index,uuid ] && [ "$2" = --format=csv,noheader ] || exit 9\n'
        f"printf '{lines}'\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")
    return script


def test_indices_become_uuids_and_uuids_pass_through(nvidia_smi: Path) -> None:
    assert resolve_gpus(("1", "0")) == (UUIDS[1], UUIDS[0])
    assert resolve_gpus((UUIDS[0], "1")) == (UUIDS[0], UUIDS[1])


def test_unknown_gpu_names_the_listed_ones(nvidia_smi: Path) -> None:
    with pytest.raises(GpuError, match=r"'2', which nvidia-smi does not list; GPUs: 0=GPU-5a1f"):
        resolve_gpus(("2",))


def test_index_and_its_uuid_are_the_same_gpu(nvidia_smi: Path) -> None:
    with pytest.raises(GpuError, match="same GPU twice"):
        resolve_gpus(("0", UUIDS[0]))


def test_without_nvidia_smi_values_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert resolve_gpus(("0", "1")) == ("0", "1")
    assert resolve_gpus(()) == ()


KNOWN = {"0": "GPU-aaaa", "1": "GPU-bbbb"}


def test_docker_gpu_preflight_messages() -> None:
    assert docker_gpu_problem({"runc": {}, "nvidia": {}}, False, KNOWN, ("GPU-aaaa",)) is None
    assert docker_gpu_problem(["runc"], True, KNOWN, ("1",)) is None  # the hook gives the driver
    no_toolkit = docker_gpu_problem(["runc", "io.containerd.runc.v2"], False, KNOWN, ("0",))
    assert no_toolkit is not None
    assert no_toolkit.startswith("the Docker engine cannot hand GPUs to containers: install the")
    assert "nvidia-container-toolkit" in no_toolkit and "nvidia-ctk runtime configure" in no_toolkit
    assert docker_gpu_problem(["nvidia"], False, KNOWN, ("2",)) == (
        "--gpus names '2', which nvidia-smi does not list; GPUs: 0=GPU-aaaa, 1=GPU-bbbb"
    )
    assert "nvidia-smi is not installed" in docker_gpu_problem(["nvidia"], True, None, ("0",))
    assert "lists none" in docker_gpu_problem(["nvidia"], True, {}, ("0",))
