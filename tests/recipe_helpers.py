"""Recipe files for end-to-end tests: the project's recipes cut down to fewer runs."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Sequence
from pathlib import Path


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
        )
    raise TypeError(f"no TOML form for {value!r}")


def dump_toml(tables: dict, prefix: str = "") -> str:
    """TOML text of nested dicts: scalars and lists inline, dicts as [tables], lists of dicts
    as [[arrays of tables]] (enough for the recipe file; the host venv has no TOML writer)."""
    lines = [
        f"{json.dumps(k)} = {_toml_value(v)}"
        for k, v in tables.items()
        if not isinstance(v, dict)
        and not (isinstance(v, list) and v and all(isinstance(x, dict) for x in v))
    ]
    for key, value in tables.items():
        name = f"{prefix}{json.dumps(key)}"
        if isinstance(value, dict):
            lines += ["", f"[{name}]", dump_toml(value, name + ".")]
        elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            for item in value:
                lines += ["", f"[[{name}]]", dump_toml(item, name + ".")]
    return "\n".join(line for line in lines if line != "") + "\n"


def one_run_recipes(path: Path, models: Sequence[str]) -> str:
    """The recipe file at `path` cut down to `models`, each with its first run only, and the
    feature variants and embedders those runs read: the same recipes, a fraction of the
    stages."""
    full = tomllib.loads(path.read_text())
    kept = {m: {**full["models"][m], "runs": full["models"][m]["runs"][:1]} for m in models}
    variants = {
        run.get(key)
        for m in kept.values()
        for run in m["runs"]
        for key in ("features", "extra_features")
    } - {None}
    extract = {v: full["extract"][v] for v in sorted(variants)}
    embed = {m["embeddings"] for m in kept.values() if m.get("embeddings")}
    tables = {"extract": extract, "models": kept}
    if embed:
        tables["embed"] = {name: full["embed"][name] for name in sorted(embed)}
    return dump_toml(tables)
