"""The account of a checkpoint load, the same in every environment (hm_extract's detector
pickles, hm_torch's upstream checkpoints, hm_paddle's params directories): where each tensor of
the file went and where each parameter of the model came from. A load succeeds only when
nothing is unaccounted for: every leftover key is either an error or allowed with its reason.

>>> account = KeyAccount("ckpt.pt", "uniter", loaded=["a.weight"], missing=["b.bias"])
>>> account.ok, account.describe()
(False, '1 tensors loaded (uniter format); missing (the model expects, the file lacks): b.bias')
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hm_shared.errors import HmDataError


@dataclass
class KeyAccount:
    source: str  # the file or folder read
    format: str = ""  # the upstream layout it was read as
    loaded: list[str] = field(default_factory=list)  # the keys whose value was loaded
    missing: list[str] = field(default_factory=list)  # the model's keys the file has no value for
    unexpected: list[str] = field(default_factory=list)  # the file's keys with nowhere to go
    mismatched: list[str] = field(default_factory=list)  # "key: file … ≠ ours …" (shape, dtype …)
    allowed: list[tuple[str, str]] = field(default_factory=list)  # (key, reason): by design

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def allowed_keys(self, reason: str) -> list[str]:
        """The keys left out for `reason`, in the order they were met."""
        return [key for key, why in self.allowed if why == reason]

    def describe(self, limit: int = 20) -> str:
        def cut(items: list[str]) -> str:
            more = f" … and {len(items) - limit} more" if len(items) > limit else ""
            return ", ".join(items[:limit]) + more

        layout = f" ({self.format} format)" if self.format else ""
        lines = [f"{len(self.loaded)} tensors loaded{layout}"]
        if self.missing:
            lines.append(f"missing (the model expects, the file lacks): {cut(self.missing)}")
        if self.unexpected:
            lines.append(f"unexpected (in the file, nowhere to go): {cut(self.unexpected)}")
        if self.mismatched:
            lines.append(f"mismatched: {cut(self.mismatched)}")
        reasons: dict[str, list[str]] = {}
        for key, reason in self.allowed:
            reasons.setdefault(reason, []).append(key)
        lines += [f"not loaded by design ({why}): {cut(keys)}" for why, keys in reasons.items()]
        return "; ".join(lines)

    def raise_for_errors(self, expected: str) -> None:
        """HmDataError naming the source and every unaccounted key; `expected` says what the
        file should have been (and any way out)."""
        if not self.ok:
            raise HmDataError(
                f"checkpoint does not match the model: {self.describe()}. {expected}", self.source
            )


__all__ = ["KeyAccount"]
