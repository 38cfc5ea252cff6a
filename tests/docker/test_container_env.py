"""What a stage container inherits from the host: the OpenBLAS kernel choice, and nothing when
the host sets none. Without it, numpy/scipy in the container pick another kernel than the local
venv on the same CPU, and B's fastText vectors (gensim, scipy BLAS) differ in the last bits."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from docker_helpers import COMPOSE_FILE, REPO

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

PROBE = (
    "import json, os, numpy, threadpoolctl; "
    "print(json.dumps({'env': os.environ.get('OPENBLAS_CORETYPE'), "
    "'kernels': sorted({i.get('architecture') for i in threadpoolctl.threadpool_info() "
    "if i['internal_api'] == 'openblas'})}))"
)


def probe(service: str, coretype: str | None, where: str) -> dict:
    """The OpenBLAS kernels numpy/scipy load in the service's image or its local venv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS_")}
    if coretype is not None:
        env["OPENBLAS_CORETYPE"] = coretype
    if where == "docker":
        cmd = ["docker", "compose", "-f", str(COMPOSE_FILE), "run", "--rm", "-T"]
        cmd += ["--entrypoint", "python", service, "-c", PROBE]
    else:
        venvs = Path(os.environ.get("HM_VENVS", REPO / ".venvs"))
        cmd = [str(venvs / service / "bin" / "python"), "-c", PROBE]
    done = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("service", ["torch", "paddle"])
@pytest.mark.parametrize("coretype", ["Haswell", None])
def test_containers_load_the_same_openblas_kernels_as_the_local_venv(
    service: str, coretype: str | None
) -> None:
    inside = probe(service, coretype, "docker")
    assert inside == probe(service, coretype, "local")
    # unset stays unset, not "": OpenBLAS would warn and fall back to its oldest kernel
    assert inside["env"] == coretype and inside["kernels"]
