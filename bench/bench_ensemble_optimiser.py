"""Our ensemble-weight optimiser (scipy Nelder-Mead from several starts) against upstream's
SimpleTuner (vilio `utils/ens.py`, 3000 steps, exploration 0.01), on the same predictions.

Synthetic dev sets of 500/1000/2000 memes: each of `--models` columns is a noisy view of one
hidden score (strength and noise differ per column, some columns share noise, as seed runs of
related models do). Both optimisers maximise dev AUROC of the weighted average; the table gives
that AUROC, the AUROC of the same weights on a held-out set drawn alike (how much of the gain is
fitted noise), and the wall time. SimpleTuner is read at run time from a vilio checkout you
point to (its `utils/ens.py`); nothing of it is kept in this repository.

    git -C vilio show HEAD:utils/ens.py > /tmp/vilio_ens.py     # or a clone's utils/ens.py
    .venvs/host/bin/python bench/bench_ensemble_optimiser.py --ens /tmp/vilio_ens.py
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from hm_shared.ensemble import optimize_weights

RESULTS = Path(__file__).parent / "results"


def load_simple_tuner(ens: Path) -> Any:
    """The SimpleTuner class of vilio's ens.py: its vendored block, without the plotting import."""
    text = ens.read_text(encoding="utf-8")
    start, end = text.index("from heapq import"), text.index("def Simplex(")
    block = "\n".join(line for line in text[start:end].splitlines() if "matplotlib" not in line)
    namespace: dict[str, Any] = {}
    # upstream code, read from the user's checkout at run time: a benchmark reference only
    exec(compile(block, str(ens), "exec"), namespace)
    return namespace["SimpleTuner"]


def make_set(n: int, k: int, rng: np.random.Generator, params: dict[str, np.ndarray]):
    y = rng.random(n) < 0.375  # the dev_seen share of hateful memes
    hidden = rng.normal(size=n) + 1.2 * y
    shared = rng.normal(size=(n, 2))  # two families of correlated columns
    noise = rng.normal(size=(n, k)) * params["noise"] + shared[:, params["family"]] * 0.8
    logits = params["strength"] * hidden[:, None] + noise
    return 1 / (1 + np.exp(-logits)), y.astype(int)


def simple_tuner_weights(tuner_cls: Any, m: np.ndarray, y: np.ndarray, steps: int) -> np.ndarray:
    k = m.shape[1]
    vertices = np.concatenate([np.zeros((1, k), int), np.identity(k, dtype=int)]).tolist()
    tuner = tuner_cls(vertices, lambda w: roc_auc_score(y, m @ np.asarray(w)), 0.01)
    tuner.optimize(steps)
    return np.asarray(tuner.get_best()[1], dtype=float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ens", type=Path, required=True, help="vilio's utils/ens.py")
    parser.add_argument("--models", type=int, default=7)
    parser.add_argument("--sizes", default="500,1000,2000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3000, help="upstream: 3000")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    tuner_cls = load_simple_tuner(args.ens)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        for repeat in range(args.repeats):
            rng = np.random.default_rng([n, repeat])
            params = {
                "strength": rng.uniform(0.3, 1.2, args.models),
                "noise": rng.uniform(0.8, 1.6, args.models),
                "family": rng.integers(0, 2, args.models),
            }
            dev, dev_y = make_set(n, args.models, rng, params)
            held, held_y = make_set(n, args.models, rng, params)
            best_single = max(roc_auc_score(dev_y, dev[:, j]) for j in range(args.models))
            row = {"n": n, "repeat": repeat, "best single": best_single}
            for name, fit in (
                ("Nelder-Mead", lambda m, y: optimize_weights(m, y)),
                ("SimpleTuner", lambda m, y: simple_tuner_weights(tuner_cls, m, y, args.steps)),
            ):
                start = time.perf_counter()
                w = fit(dev, dev_y)
                row[f"{name} s"] = time.perf_counter() - start
                row[f"{name} dev"] = roc_auc_score(dev_y, dev @ w)
                row[f"{name} held-out"] = roc_auc_score(held_y, held @ w)
            rows.append(row)
            print(
                f"n={n} #{repeat}: single {best_single:.4f} | NM dev {row['Nelder-Mead dev']:.4f}"
                f" held {row['Nelder-Mead held-out']:.4f} {row['Nelder-Mead s']:.2f}s | ST dev "
                f"{row['SimpleTuner dev']:.4f} held {row['SimpleTuner held-out']:.4f} "
                f"{row['SimpleTuner s']:.2f}s",
                flush=True,
            )
    if args.no_write:
        return
    lines = [
        "# Ensemble weights: Nelder-Mead (ours) vs SimpleTuner (vilio utils/ens.py)",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}",
        f"- command: `python bench/bench_ensemble_optimiser.py --ens <vilio utils/ens.py> "
        f"--models {args.models} --sizes {args.sizes} --repeats {args.repeats} "
        f"--steps {args.steps}`",
        f"- {args.models} synthetic model columns per set; weights fitted on dev, applied to a "
        "held-out set drawn alike",
        "",
        "| memes | set | best single (dev) | NM dev | ST dev | NM held-out | ST held-out "
        "| NM time | ST time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['repeat']} | {r['best single']:.4f} | {r['Nelder-Mead dev']:.4f} "
            f"| {r['SimpleTuner dev']:.4f} | {r['Nelder-Mead held-out']:.4f} "
            f"| {r['SimpleTuner held-out']:.4f} | {r['Nelder-Mead s']:.2f} s "
            f"| {r['SimpleTuner s']:.2f} s |"
        )
    out = RESULTS / "ensemble_optimiser.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
