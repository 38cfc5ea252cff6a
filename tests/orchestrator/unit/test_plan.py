"""Every Reason of the pure planner, on a tiny recipe, with records built by hand."""

from pathlib import Path

import pytest

from orchestrator.cache import key_parts, stage_key
from orchestrator.plan import Fingerprints, decide, plan
from orchestrator.recipes import load_recipes
from orchestrator.records import Record
from orchestrator.stages import StageDef, build_stages

HASHES = Fingerprints(
    inputs={
        "hm": "h-hm",
        "weights/faster_rcnn_from_caffe_attr.pkl": "h-det",
        "weights/uniter-large.pt": "h-uniter",
    },
    env_locks={"host": "lock-host", "extract": "lock-extract", "torch": "lock-torch"},
    code={"host": "code-host", "extract": "code-extract", "torch": "code-torch"},
)


def _done(stage: StageDef, records: dict[str, Record | None], hashes: Fingerprints) -> Record:
    inputs = {
        n: (records[r.producer].output_hash if r.producer else hashes.inputs[r.ident])
        for n, r in stage.keyed_inputs.items()
    }
    parts = key_parts(stage, inputs, hashes.env_locks, hashes.code)
    return Record(
        stage=stage.id,
        kind=stage.kind,
        status="done",
        key=stage_key(parts),
        key_parts=parts,
        output=stage.output,
        attempt="a",
        log="l",
        runtime="local",
        started="2026-01-01T00:00:00+00:00",
        output_hash=f"out-{stage.id}",
    )


@pytest.fixture
def stages(tiny_recipes: Path) -> list[StageDef]:
    return build_stages(load_recipes(tiny_recipes), ("U",), "smoke")


def _all_done(stages: list[StageDef], hashes: Fingerprints = HASHES) -> dict[str, Record | None]:
    records: dict[str, Record | None] = {}
    for stage in stages:
        records[stage.id] = _done(stage, records, hashes)
    return records


def _reasons(stages, records, hashes=HASHES, problems=None) -> dict[str, str]:
    return {p.stage.id: p.reason for p in plan(stages, records, hashes, problems or {})}


def test_no_record(stages) -> None:
    reasons = _reasons(stages, {})
    assert set(reasons.values()) <= {"no record", "input prepared will be rebuilt"}
    assert reasons["prepare"] == "no record"


def test_all_cached(stages) -> None:
    planned = plan(stages, _all_done(stages), HASHES, {})
    assert [p.action for p in planned] == ["cached"] * len(stages)
    assert {p.reason for p in planned} == {"cached"}


def test_params_changed(stages, tiny_recipes: Path) -> None:
    records = _all_done(stages)
    text = tiny_recipes.read_text().replace("params = { lr = 2e-5 }", "params = { lr = 3e-5 }")
    tiny_recipes.write_text(text)
    changed = build_stages(load_recipes(tiny_recipes), ("U",), "smoke")
    reasons = _reasons(changed, records)
    assert reasons["train/U/U50/train"] == "params changed: lr 2e-5→3e-5"
    assert reasons["train/U/U36/train"] == "cached"
    assert reasons["average/U"] == "input run:U50:train, run:U50:traindev will be rebuilt"


def test_input_changed_when_upstream_output_differs(stages) -> None:
    records = _all_done(stages)
    records["prepare"] = records["prepare"].model_copy(update={"output_hash": "other"})
    reasons = _reasons(stages, records)
    assert reasons["prepare"] == "cached"
    assert reasons["extract/attr"] == "input prepared changed"
    assert reasons["train/U/U36/train"] == "input prepared changed"


def test_external_input_changed(stages) -> None:
    records = _all_done(stages)
    hashes = Fingerprints({**HASHES.inputs, "hm": "h-hm-2"}, HASHES.env_locks, HASHES.code)
    assert _reasons(stages, records, hashes)["prepare"] == "input hm changed"


def test_env_lock_changed(stages) -> None:
    records = _all_done(stages)
    hashes = Fingerprints(HASHES.inputs, {**HASHES.env_locks, "torch": "new"}, HASHES.code)
    reasons = _reasons(stages, records, hashes)
    assert reasons["train/U/U36/train"] == "env lock changed"
    assert reasons["extract/attr"] == "cached"


def test_code_changed(stages) -> None:
    records = _all_done(stages)
    hashes = Fingerprints(HASHES.inputs, HASHES.env_locks, {**HASHES.code, "extract": "new"})
    assert _reasons(stages, records, hashes)["extract/attr"] == "code changed"


def test_incomplete_and_failed_attempts(stages) -> None:
    records = _all_done(stages)
    records["train/U/U36/train"] = records["train/U/U36/train"].model_copy(
        update={"status": "running"}
    )
    records["train/U/U50/train"] = records["train/U/U50/train"].model_copy(
        update={"status": "failed", "exit_code": 3}
    )
    reasons = _reasons(stages, records)
    assert reasons["train/U/U36/train"] == "incomplete attempt"
    assert reasons["train/U/U50/train"] == "last attempt failed (exit 3)"


def test_output_missing_or_changed(stages) -> None:
    records = _all_done(stages)
    assert _reasons(stages, records, problems={"ensemble": "output missing"}) == {
        **{s.id: "cached" for s in stages},
        "ensemble": "output missing",
        "report": "input ensemble will be rebuilt",
    }
    reasons = _reasons(stages, records, problems={"prepare": "output changed: train.jsonl missing"})
    assert reasons["prepare"] == "output changed: train.jsonl missing"
    # a consumer waits for the rebuilt output: cached at run time if it comes out identical
    assert reasons["extract/attr"] == "input prepared will be rebuilt"


def test_profile_change_is_a_params_change(tiny_recipes: Path, stages) -> None:
    records = _all_done(stages)
    full = build_stages(load_recipes(tiny_recipes), ("U",), "full")
    reasons = _reasons(full, records)
    assert reasons["train/U/U36/train"] == "params changed: +checkpoint=uniter-large.pt, epochs 1→5"
    assert reasons["prepare"] == "profile changed: smoke→full"


def test_decide_formats_floats_like_the_recipe() -> None:
    stage = StageDef(id="s", kind="prepare", env="host", output="o", params={"lr": 1e-5})
    record = _done(stage, {}, HASHES)
    old = record.key_parts
    new = {**old, "params": {"lr": 2e-5, "warmup": 3}}
    assert decide(record, new, None) == ("run", "params changed: lr 1e-5→2e-5, +warmup=3")


def test_an_engine_setting_change_reads_as_the_recipe_param_it_is() -> None:
    stage = StageDef(
        id="s", kind="prepare", env="host", output="o", params={"size": "tiny"}, engine={"lr": 1}
    )
    record = _done(stage, {}, HASHES)
    old = record.key_parts
    assert decide(record, old, None) == ("cached", "cached")
    new = {**old, "engine": {"lr": 2, "epochs": 3}}
    assert decide(record, new, None) == ("run", "params changed: +epochs=3, lr 1→2")
    assert stage_key(new) != stage_key(old)
