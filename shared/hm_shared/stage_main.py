"""`python -m hm_<env> <verb> --spec FILE` for every environment package: one entry point shape."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path

from hm_shared.errors import HmError, file_system_fault
from hm_shared.spec import StageSpec, load_spec

Verb = Callable[[StageSpec], None]


def run_verb(prog: str, verbs: Mapping[str, Verb], argv: list[str] | None = None) -> int:
    """Parse `<verb> --spec FILE`, run the verb, map domain errors to their exit codes."""
    parser = argparse.ArgumentParser(prog=prog, description=f"Stage entry point of {prog}.")
    parser.add_argument("verb", choices=sorted(verbs))
    parser.add_argument(
        "--spec", type=Path, required=True, help="stage spec written by the orchestrator"
    )
    args = parser.parse_args(argv)

    def run() -> None:
        spec = load_spec(args.spec)
        spec.output_dir.mkdir(parents=True, exist_ok=True)
        verbs[args.verb](spec)

    return exit_code_of(run)


def exit_code_of(run: Callable[[], None]) -> int:
    """Run `run` and turn how it ended into the exit code of docs/architecture.md §6: a domain
    error prints one line and gives its class's code, a refused write names the path (5)."""
    try:
        run()
    except HmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        if exc.filename is None:
            traceback.print_exc()
            return 1
        fault = file_system_fault(exc)  # a full disk, a read-only or foreign-owned data dir
        print(f"error: {fault}", file=sys.stderr)
        return fault.exit_code
    except Exception:
        traceback.print_exc()
        return 1
    return 0
