"""The local runtime: one virtualenv per environment under `.venvs/<env>`.

A venv is built from `containers/<env>/requirements.lock` plus editable installs of hm_shared
and hm_<env>. Its completion marker `hm-env.json` (lock hash, packages) is written last, so a
build killed half-way is detected and redone. Host stages use the orchestrator's interpreter.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from hm_shared.io import atomic_write_json, sha256_file
from orchestrator.cache import lock_file
from orchestrator.datadir import DataDir
from orchestrator.errors import EnvBuildError
from orchestrator.images import wheelhouse_ready
from orchestrator.runtimes import EnvInfo, Runtime, Say

MARKER = "hm-env.json"


class LocalRuntime(Runtime):
    name = "local"

    def venv(self, env: str) -> Path:
        return self.config.venvs / env

    def packages(self, env: str) -> list[str]:
        return ["shared", f"containers/{env}"]

    def python(self, env: str) -> str:
        if env == "host":
            return sys.executable
        return str(self.venv(env) / "bin" / "python")

    def is_current(self, env: str) -> bool:
        marker = self.venv(env) / MARKER
        try:
            have = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return have.get("lock_sha256") == sha256_file(
            lock_file(self.config.repo, env)
        ) and have.get("packages") == self.packages(env)

    def ensure(self, env: str, say: Say) -> EnvInfo:
        lock = lock_file(self.config.repo, env)
        want = sha256_file(lock)
        if env == "host" or self.is_current(env):
            return EnvInfo(want)
        venv = self.venv(env)
        say(f"building {venv} from {lock} (the lock changed or the venv is incomplete) …")
        t0 = time.monotonic()
        self._build(env, venv, lock)
        atomic_write_json(venv / MARKER, {"lock_sha256": want, "packages": self.packages(env)})
        say(f"built {venv} in {time.monotonic() - t0:.0f} s")
        return EnvInfo(want)

    def _build(self, env: str, venv: Path, lock: Path) -> None:
        shutil.rmtree(venv, ignore_errors=True)
        build_log = venv.with_name(f"{env}.build.log")
        venv.parent.mkdir(parents=True, exist_ok=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        wheelhouse = wheelhouse_ready(self.config.repo)  # the images' wheels, when complete
        find_links = ["--find-links", str(wheelhouse)] if wheelhouse else []
        editable = []
        for package in self.packages(env):
            editable += ["-e", str(self.config.repo / package)]
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [*pip, *find_links, "-r", str(lock)],
            [*pip, "--no-deps", "--config-settings", "editable_mode=compat", *editable],
        ]
        with open(build_log, "wb") as log:
            for step in steps:
                log.write(f"$ {' '.join(step)}\n".encode())
                log.flush()
                if subprocess.run(step, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
                    tail = build_log.read_text(errors="replace").splitlines()[-15:]
                    raise EnvBuildError(
                        f"building {venv} failed at `{' '.join(step[:4])} …`; full log: "
                        f"{build_log}\n" + "\n".join(tail)
                    )

    def data_root(self, data: DataDir, env: str = "host") -> str:
        return str(data.root)

    def command(self, env: str, verb: str, spec_path: Path, data: DataDir) -> list[str]:
        module = "hm_shared" if env == "host" else f"hm_{env}"
        return [self.python(env), "-m", module, verb, "--spec", str(spec_path)]
