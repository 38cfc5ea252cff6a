"""The layout of a data directory (docs/architecture.md §3), in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The report's stage timings, written by the executor from the records just before the report
# stage starts (an unkeyed input of it: `InputRef.run_facts`)
TIMINGS_FILE = "work/state/timings.json"


@dataclass(frozen=True)
class DataDir:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).resolve())

    @property
    def hm(self) -> Path:
        return self.root / "hm"

    @property
    def weights(self) -> Path:
        return self.root / "weights"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def state(self) -> Path:
        return self.work / "state"

    @property
    def lock(self) -> Path:
        return self.state / "lock"

    @property
    def trace(self) -> Path:
        return self.state / "trace.tsv"

    @property
    def hashes(self) -> Path:
        return self.state / "hashes.json"

    @property
    def timings(self) -> Path:
        return self.root / TIMINGS_FILE

    def record(self, slug: str) -> Path:
        return self.state / "records" / f"{slug}.json"

    def log(self, slug: str) -> Path:
        return self.state / "logs" / f"{slug}.log"

    def attempts(self, slug: str) -> Path:
        return self.work / ".attempts" / slug

    def attempt(self, slug: str, key: str) -> Path:
        return self.attempts(slug) / key[:12]

    def rel(self, path: Path) -> str:
        return Path(path).relative_to(self.root).as_posix()

    def has_dataset(self) -> bool:
        """True when data/hm holds anything at all (an empty or missing folder means 'generate')."""
        return self.hm.is_dir() and any(self.hm.iterdir())
