"""Stage params → a config dataclass, with one error for a misspelt name or a bad value."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any, TypeVar

from hm_shared.errors import SpecError

Config = TypeVar("Config")


def config_from_params(
    cls: type[Config],
    params: Mapping[str, Any],
    where: str,
    what: str,
    *,
    also_valid: Iterable[str] = (),
    note: str = "",
) -> Config:
    """`cls(**params)`; an unknown name is a SpecError naming `where`, the names and the valid
    ones (`cls`'s fields and `also_valid`, names another part of the stage reads), a value the
    dataclass refuses one naming the problem. `note` ends the unknown-name message."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(params) - known)
    if unknown:
        valid = sorted(known | set(also_valid))
        raise SpecError(f"{where}: unknown {what} param(s) {unknown}; valid: {valid}{note}")
    try:
        return cls(**params)
    except TypeError as exc:
        raise SpecError(f"{where}: bad {what} params: {exc}") from exc


__all__ = ["config_from_params"]
