"""`python -m hm_extract extract --spec FILE` (stage) or `python -m hm_extract --variant V …`."""

from __future__ import annotations

import sys

from hm_shared.spec import StageSpec
from hm_shared.stage_main import run_verb


def _extract(spec: StageSpec) -> None:
    from hm_extract.extract import extract_stage

    extract_stage(spec)


VERBS = {"extract": _extract}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in VERBS:
        return run_verb("hm_extract", VERBS, argv)
    from hm_extract.cli import cli

    return cli(argv)


if __name__ == "__main__":
    sys.exit(main())
