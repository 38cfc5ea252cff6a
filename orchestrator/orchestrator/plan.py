"""Planning is a pure function: stages + records + hashes → what runs, and why.

Example: after `prepare` and `train/B/B42/train` ran with lr 1e-5, changing the recipe to 2e-5::

    prepare                cached
    train/B/B42/train      run     params changed: lr 1e-5→2e-5
    average/B              run     input run:B42:train will be rebuilt

A stage whose producer runs first cannot know its key yet; the plan uses the producer's last
output hash (early cut-off: if the producer's output comes out identical, the consumer is
cached at run time). The executor decides again, with real hashes, when a stage is ready.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any, Literal

from orchestrator.cache import MISSING, key_parts, stage_key
from orchestrator.records import Record
from orchestrator.stages import StageDef

Action = Literal["run", "cached"]


@dataclass(frozen=True)
class Fingerprints:
    """Hashes gathered from disk before planning."""

    inputs: Mapping[str, str]  # InputRef.ident → content hash, external inputs only
    env_locks: Mapping[str, str]  # env → sha256 of its lock file
    code: Mapping[str, str]  # env → code version


@dataclass(frozen=True)
class PlannedStage:
    stage: StageDef
    action: Action
    reason: str
    key: str


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return re.sub(r"e([+-])0*(\d)", lambda m: f"e{m[1].replace('+', '')}{m[2]}", repr(value))
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def _params_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    changes = []
    for name in sorted(set(old) | set(new)):
        if name not in old:
            changes.append(f"+{name}={_fmt(new[name])}")
        elif name not in new:
            changes.append(f"-{name}")
        elif old[name] != new[name]:
            changes.append(f"{name} {_fmt(old[name])}→{_fmt(new[name])}")
    return ", ".join(changes)


def decide(
    record: Record | None,
    parts: Mapping[str, Any],
    output_problem: str | None,
    pending: Set[str] = frozenset(),
) -> tuple[Action, str]:
    """Whether a stage with these key parts runs, and the reason (first difference found).

    `output_problem` says what is wrong with the output on disk ("output missing", "output
    changed: …"; None when it matches its record). `pending` names inputs whose producer runs
    first; their hash in `parts` is provisional.
    """
    if record is None:
        return "run", "no record"
    if record.status == "running":
        return "run", "incomplete attempt"
    if record.status == "failed":
        return "run", f"last attempt failed (exit {record.exit_code})"
    old = record.key_parts
    if old.get("kind") != parts["kind"] or old.get("env") != parts["env"]:
        was, now = f"{old.get('env')}/{old.get('kind')}", f"{parts['env']}/{parts['kind']}"
        return "run", f"stage changed: {was}→{now}"
    # the recipe's one table, whichever part (model, engine) each name went to
    old_params = {**old.get("params", {}), **old.get("engine", {})}
    new_params = {**parts["params"], **parts["engine"]}
    if old_params != new_params:
        return "run", f"params changed: {_params_diff(old_params, new_params)}"
    if old.get("profile") != parts["profile"]:
        return "run", f"profile changed: {old.get('profile')}→{parts['profile']}"
    old_inputs, new_inputs = old.get("inputs", {}), parts["inputs"]
    if set(old_inputs) != set(new_inputs):
        added = sorted(set(new_inputs) - set(old_inputs))
        removed = sorted(set(old_inputs) - set(new_inputs))
        changes = [f"+{n}" for n in added] + [f"-{n}" for n in removed]
        return "run", "inputs changed: " + ", ".join(changes)
    for name in sorted(new_inputs):
        if name not in pending and old_inputs[name] != new_inputs[name]:
            if new_inputs[name] == MISSING:
                return "run", f"input {name} missing"
            return "run", f"input {name} changed"
    if old.get("env_lock") != parts["env_lock"]:
        return "run", "env lock changed"
    if old.get("code") != parts["code"]:
        return "run", "code changed"
    if pending:
        return "run", f"input {', '.join(sorted(pending))} will be rebuilt"
    if record.key != stage_key(parts):
        return "run", "key changed"  # parts equal but key format differs: an older orchestrator
    if output_problem:
        return "run", output_problem
    return "cached", "cached"


def plan(
    stages: list[StageDef],
    records: Mapping[str, Record | None],
    hashes: Fingerprints,
    output_problems: Mapping[str, str],
) -> list[PlannedStage]:
    """Plan `stages` (topologically ordered) given their records and the hashes on disk.

    `records` maps stage id → its record (None: none); `output_problems` maps the ids whose
    output on disk is not what their record lists to why (`cache.output_problems`).
    """
    planned: dict[str, PlannedStage] = {}
    for stage in stages:
        input_hashes: dict[str, str] = {}
        pending: set[str] = set()
        for name, ref in stage.keyed_inputs.items():
            if ref.producer is None:
                input_hashes[name] = hashes.inputs[ref.ident]
                continue
            producer = records.get(ref.producer)
            last = producer.output_hash if producer and producer.output_hash else MISSING
            input_hashes[name] = last
            if planned[ref.producer].action == "run":
                pending.add(name)
        parts = key_parts(stage, input_hashes, hashes.env_locks, hashes.code)
        problem = output_problems.get(stage.id)
        action, reason = decide(records.get(stage.id), parts, problem, pending)
        planned[stage.id] = PlannedStage(stage, action, reason, stage_key(parts))
    return list(planned.values())
