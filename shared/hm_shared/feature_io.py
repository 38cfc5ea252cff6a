"""`python -m hm_shared.feature_io import-tsv|export-tsv|import-lmdb|export-lmdb SRC DST`.

Converts between our feature store (a directory, see `hm_shared.features`) and the two upstream
formats: the py-bottom-up-attention TSV and MMF's `detectron.lmdb`. Imports append to DST and can
be rerun after a kill (images already in the store are skipped).

Example:
    python -m hm_shared.feature_io import-tsv data/hm_vgattr3636.tsv data/work/features/vgattr3636
    python -m hm_shared.feature_io import-lmdb data/detectron.lmdb data/work/features/lmdb100 \\
        --ids data/hm/img
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hm_shared.errors import HmError
from hm_shared.features import DatasetIds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hm_shared.feature_io",
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example:\n" + __doc__.split("Example:\n")[1],
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, what in (
        ("import-tsv", "upstream TSV SRC → feature store DST"),
        ("export-tsv", "feature store SRC → upstream TSV DST"),
        ("import-lmdb", "MMF LMDB SRC → feature store DST"),
        ("export-lmdb", "feature store SRC → MMF LMDB directory DST"),
    ):
        sub = commands.add_parser(name, help=what, description=what)
        sub.add_argument("src", type=Path, metavar="SRC")
        sub.add_argument("dst", type=Path, metavar="DST")
        if name.startswith("import"):
            sub.add_argument(
                "--feature-dim", type=int, default=2048, help="region feature size (2048)"
            )
            sub.add_argument(
                "--ids",
                type=Path,
                help="map keys to the dataset's image stems (8291 → 08291) using an image "
                "folder, a dataset .jsonl or a file with one id per line; others are skipped",
            )
        if name == "export-lmdb":
            sub.add_argument(
                "--num-classes",
                type=int,
                default=1600,
                help="width of the cls_prob matrix written per image; 0 writes cls_prob=None",
            )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from hm_shared import feature_lmdb, feature_tsv

    try:
        if args.command.startswith("import"):
            ids = DatasetIds.from_path(args.ids) if args.ids is not None else None
            tsv = args.command == "import-tsv"
            run = feature_tsv.import_tsv if tsv else feature_lmdb.import_lmdb
            summary = run(args.src, args.dst, feature_dim=args.feature_dim, dataset_ids=ids)
            print(summary)
        elif args.command == "export-tsv":
            count = feature_tsv.export_tsv(args.src, args.dst)
            print(f"{args.dst}: {count} images written")
        else:
            classes = args.num_classes or None
            count = feature_lmdb.export_lmdb(args.src, args.dst, num_classes=classes)
            print(f"{args.dst}: {count} images written (attributes are not part of this layout)")
    except HmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
