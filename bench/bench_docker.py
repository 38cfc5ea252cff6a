"""Container start overhead per stage: a no-op stage process under Docker vs the local venv.

    .venvs/host/bin/python bench/bench_docker.py [--repeats 5] [--envs torch extract paddle]

For each environment, times (median of `--repeats`, wall clock, sequential):
  * `python -c pass`          — interpreter start only;
  * `python -m hm_<env> --help` — interpreter + the stage module's imports (what every stage pays
    before it does any work);
each run as the docker runtime runs a stage (`docker compose run --rm -T` with the checkout's
sources mounted, the data dir bind-mounted, HOST_UID/HOST_GID set) and with the local venv's
interpreter. Also times the image check the docker runtime does once per environment and run.
Writes bench/results/docker.md (date, machine, commands, numbers).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from orchestrator import images

REPO = Path(__file__).resolve().parents[1]

RESULTS = REPO / "bench" / "results" / "docker.md"
MODULES = {"torch": "hm_torch", "extract": "hm_extract", "paddle": "hm_paddle"}


def timed(cmd: list[str], env: dict[str, str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            sys.exit(f"`{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return times


def compose_prefix(env: str) -> list[str]:
    """What the docker runtime puts before the stage's argv (runtimes/docker.py), python as
    the entrypoint so the same `-c` / `-m` arguments run in both places."""
    return [
        "docker",
        "compose",
        "-f",
        str(REPO / "compose.yaml"),
        "run",
        "--rm",
        "-T",
        "-v",
        f"{REPO / 'shared'}:/opt/src/shared:ro",
        "-v",
        f"{REPO / 'containers' / env}:/opt/src/containers/{env}:ro",
        "--entrypoint",
        "python",
        env,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--envs", nargs="+", default=list(MODULES), choices=list(MODULES))
    parser.add_argument(
        "--venvs", type=Path, default=Path(os.environ.get("HM_VENVS", REPO / ".venvs"))
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    images.check_docker()
    data = Path(tempfile.mkdtemp(prefix="hm-bench-docker-"))
    environ = {
        **os.environ,
        "DATA_DIR": str(data),
        "HOST_UID": str(os.getuid()),
        "HOST_GID": str(os.getgid()),
    }
    rows = []
    for env in args.envs:
        image = images.image_id(env)
        if image is None:
            sys.exit(f"{images.image_name(env)} is not built: run `./hm images`")
        local_python = args.venvs / env / "bin" / "python"
        # Unbuilt local venv: compare with the torch venv, which holds every extract package.
        if not local_python.exists():
            local_python = args.venvs / "torch" / "bin" / "python"
        for label, tail in (
            ("python -c pass", ["-c", "pass"]),
            (f"python -m {MODULES[env]} --help", ["-m", MODULES[env], "--help"]),
        ):
            docker_cmd = [*compose_prefix(env), *tail]
            local_cmd = [str(local_python), *tail]
            docker_s = statistics.median(timed(docker_cmd, environ, args.repeats))
            local_s = statistics.median(timed(local_cmd, environ, args.repeats))
            rows.append((env, label, docker_s, local_s, " ".join(docker_cmd), str(local_python)))
            print(f"{env:8} {label:32} docker {docker_s:6.2f} s  local {local_s:6.2f} s")
        check = [
            "docker",
            "run",
            "--rm",
            "--entrypoint",
            "sha256sum",
            image,
            "/opt/requirements.lock",
        ]
        check_s = statistics.median(timed(check, environ, args.repeats))
        rows.append(
            (env, "image lock check (once per env and run)", check_s, None, " ".join(check), "")
        )
    write_results(args.out, rows, args.repeats)
    print(f"written {args.out}")


def docker_versions() -> str:
    engine = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True
    ).stdout.strip()
    compose = subprocess.run(
        ["docker", "compose", "version", "--short"], capture_output=True, text=True
    ).stdout.strip()
    return f"Docker engine {engine}, Compose {compose}"


def write_results(out: Path, rows: list[tuple], repeats: int) -> None:
    cpus = os.cpu_count()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        "# Docker runtime: container start overhead per stage",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, machine `{platform.node()}` "
        f"({platform.machine()}, {cpus} CPUs, load average {load} when it ended), "
        f"{docker_versions()}.",
        f"Command: `{Path(sys.executable).name} bench/bench_docker.py {' '.join(sys.argv[1:])}`"
        f" (host venv); median of {repeats} sequential runs, wall clock.",
        "",
        "| env | what | docker | local venv | overhead |",
        "|---|---|---|---|---|",
    ]
    for env, label, docker_s, local_s, _, _ in rows:
        if local_s is None:
            lines.append(f"| {env} | {label} | {docker_s:.2f} s | | |")
        else:
            lines.append(
                f"| {env} | `{label}` | {docker_s:.2f} s | {local_s:.2f} s | "
                f"{docker_s - local_s:+.2f} s |"
            )
    lines += ["", "Docker commands (the docker runtime's own prefix, python as entrypoint):", ""]
    lines += [f"- `{cmd}`" for _, _, _, _, cmd, _ in rows]
    lines += ["", "Local interpreters:", ""]
    lines += sorted({f"- `{python}`" for *_, python in rows if python})
    lines.append("")
    out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
