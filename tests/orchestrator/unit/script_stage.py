"""A real stage process for executor tests: `python script_stage.py SPEC`.

It follows the stage contract (docs/architecture.md §2.1) with behaviour chosen by params:
`sleep` seconds, `fail` → exit 1 (or the code it gives), `disk_full` → exit 1 after an ENOSPC
line buried in later output, `kill_self` → SIGKILL; it records each start, the GPU it saw
and its inputs' content.
"""

import json
import os
import signal
import sys
import time
from pathlib import Path


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    root, params = Path(spec["data_root"]), spec["params"]
    out = root / spec["output"]
    with open(out / "starts.txt", "a") as handle:
        handle.write("start\n")  # deterministic: a resumed attempt shows two lines
    (out / "started.flag").write_text("1")
    time.sleep(params.get("sleep", 0))
    if params.get("fail"):
        print(f"stage {spec['stage']}: asked to fail", file=sys.stderr)
        sys.exit(1 if params["fail"] is True else params["fail"])
    if params.get("disk_full"):  # the fault, then 20 lines of the errors it causes later
        print("OSError: [Errno 28] No space left on device: '/data/work/x'", file=sys.stderr)
        for i in range(20):
            print(f"  later error {i}", file=sys.stderr)
        sys.exit(1)
    if params.get("kill_self"):
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    values = [root / rel / "value.txt" for rel in spec["inputs"].values()]
    inputs = {str(v): v.read_text() for v in values if v.is_file()}  # external inputs have none
    (out / "value.txt").write_text(f"{spec['stage']}<{','.join(sorted(inputs.values()))}>")
    (out / "gpu.txt").write_text(os.environ["CUDA_VISIBLE_DEVICES"] + "|" + spec["device"])
    (out / "started.flag").unlink()


if __name__ == "__main__":
    main()
