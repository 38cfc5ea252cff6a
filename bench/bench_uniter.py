"""Training throughput and peak memory of UNITER (U), LXMERT (X) and DeVLBERT (D): eager
attention vs SDPA, fp32 vs bf16.

Each (size, attention, precision) case runs in its own process so that its peak memory is its
own. One training step = forward + backward + AdamW update on random inputs of 128 tokens + 50
boxes, as the engine does it (bf16 = `torch.autocast("cuda", torch.bfloat16)`, fp32 weights).
On CPU the cases are fp32 eager vs fp32 SDPA (peak RSS); on CUDA eager fp32 vs SDPA bf16 and
the two in between (peak = torch.cuda.max_memory_allocated), plus what the U recipe (3 runs ×
2 fits × 5 epochs of about 9,000 memes) would take at that rate.

    .venvs/torch/bin/python bench/bench_uniter.py --batch 2 --threads 1     # CPU, writes results
    .venvs/torch/bin/python bench/bench_uniter.py --device cuda --batch 8   # a GPU machine
    .venvs/torch/bin/python bench/bench_uniter.py --sizes base --steps 2 --no-write
    .venvs/torch/bin/python bench/bench_uniter.py --models U,X,D --sizes base --batch 2 \
        --threads 1 --out two_stream.md     # X and D exist at base width only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
RECIPE_SAMPLES = 3 * 2 * 5 * 9000  # U: 3 runs × (train, traindev) × 5 epochs × ~9k memes


def build(letter: str, size: str, attn: str):
    """(model, feature width, box-vector width) of the full-size model `letter`."""
    if letter == "U":
        from hm_torch.models.uniter import UniterConfig, UniterForHatefulMemes

        cfg = getattr(UniterConfig, size)().replace(attn_implementation=attn)
        return UniterForHatefulMemes(cfg), cfg.img_dim, cfg.pos_dim
    if letter == "X":
        from hm_torch.models.lxmert import LxmertConfig, LxmertForHatefulMemes

        cfg = getattr(LxmertConfig, size)().replace(attn_implementation=attn)
        return LxmertForHatefulMemes(cfg), cfg.visual_feat_dim, cfg.visual_pos_dim
    from hm_torch.models.devlbert import DevlbertConfig, DevlbertForHatefulMemes

    cfg = getattr(DevlbertConfig, size)().replace(attn_implementation=attn)
    return DevlbertForHatefulMemes(cfg), cfg.v_feature_size, cfg.v_pos_dim


def run_case(
    letter: str, size: str, attn: str, precision: str, device: str, batch: int, steps: int,
    warmup: int, threads: int,
) -> dict[str, float]:  # fmt: skip
    import torch

    if threads:
        torch.set_num_threads(threads)

    torch.manual_seed(0)
    model, feature_dim, pos_dim = build(letter, size, attn)
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    tokens, boxes = 128, 50
    batch_dict = {
        "input_ids": torch.randint(1, model.config.vocab_size, (batch, tokens)),
        "text_mask": torch.ones(batch, tokens),
        "img_feats": torch.randn(batch, boxes, feature_dim),
        "img_pos": torch.rand(batch, boxes, pos_dim),
        "img_mask": torch.ones(batch, boxes),
    }
    batch_dict = {k: v.to(device) for k, v in batch_dict.items()}
    labels = torch.randint(0, 2, (batch,), device=device)
    autocast = torch.autocast(device, torch.bfloat16, enabled=precision == "bf16")
    cuda = device == "cuda"
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(batch_dict).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    if cuda:
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    params = sum(p.numel() for p in model.parameters())
    return {
        "samples_per_s": batch * len(times) / sum(times),
        "peak_mib": peak_mib,
        "params_m": params / 1e6,
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


CASES = {
    "cpu": [("eager", "fp32"), ("sdpa", "fp32")],
    "cuda": [("eager", "fp32"), ("sdpa", "fp32"), ("eager", "bf16"), ("sdpa", "bf16")],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="U", help="letters among U, X, D")
    parser.add_argument("--sizes", default="base,large")
    parser.add_argument("--out", help="file name under bench/results (default per device)")
    parser.add_argument("--device", choices=sorted(CASES), default="cpu")
    parser.add_argument("--batch", type=int, default=8, help="upstream: 8")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: default")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: letter:size:attn:precision
    args = parser.parse_args()
    common = [
        *("--device", args.device, "--batch", str(args.batch), "--steps", str(args.steps)),
        *("--warmup", str(args.warmup), "--threads", str(args.threads)),
    ]
    if args.case:
        letter, size, attn, precision = args.case.split(":")
        result = run_case(
            letter, size, attn, precision, args.device, args.batch, args.steps, args.warmup,
            args.threads,
        )  # fmt: skip
        print(json.dumps(result))
        return

    import torch

    rows = []
    cases = [
        (letter, size, attn, precision)
        for letter in args.models.split(",")
        for size in args.sizes.split(",")
        for attn, precision in CASES[args.device]
        if letter == "U" or size == "base"  # X and D were released at base width only
    ]
    for letter, size, attn, precision in cases:
        case = f"{letter}:{size}:{attn}:{precision}"
        child = subprocess.run(
            [sys.executable, __file__, "--case", case, *common],
            check=True,
            capture_output=True,
            text=True,
        )
        result = json.loads(child.stdout.strip().splitlines()[-1])
        rows.append((letter, size, attn, precision, result))
        print(
            f"{letter}-{size:5s} {attn:5s} {precision} {result['samples_per_s']:.3f} samples/s "
            f"peak {result['peak_mib']:.0f} MiB",
            flush=True,
        )
    if args.no_write:
        return
    cuda = args.device == "cuda"
    machine = (
        f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
        if cuda
        else f"{cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
        f"{args.threads or torch.get_num_threads()} torch thread(s); the machine is shared, "
        "so other jobs add noise"
    )
    command = "python bench/bench_uniter.py " + " ".join(sys.argv[1:])
    peak = "torch.cuda.max_memory_allocated" if cuda else "the peak RSS of the process"
    lines = [
        f"# Training throughput of {args.models} on {args.device}: attention × precision",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {machine}",
        f"- command: `{command.strip()}`",
        f"- step: forward + backward + AdamW, batch {args.batch}, 128 tokens + 50 boxes, "
        f"{args.steps} timed steps after {args.warmup} warm-up",
        f"- peak memory: {peak} that ran the case (model, AdamW state, activations)",
        f"- recipe estimate: {RECIPE_SAMPLES:,} training samples (3 runs × 2 fits × 5 epochs "
        "× ~9,000 memes, the U, X and D recipes alike) at the measured rate, training steps only",
        "",
        "| model | params | attention | precision | samples/s | peak (MiB) | recipe estimate |",
        "|---|---|---|---|---|---|---|",
    ]
    for letter, size, attn, precision, result in rows:
        hours = RECIPE_SAMPLES / result["samples_per_s"] / 3600
        lines.append(
            f"| {letter}-{size} | {result['params_m']:.1f} M | {attn} | {precision} "
            f"| {result['samples_per_s']:.3f} | {result['peak_mib']:.0f} | {hours:.2f} h |"
        )
    default = "uniter.md" if args.device == "cpu" else f"uniter-{args.device}.md"
    out = RESULTS / (args.out or default)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
