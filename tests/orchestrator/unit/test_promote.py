"""Promotion killed between each pair of steps leaves either the old or the new output, never a
mixture, and a retried promotion finishes the job."""

import os
import shutil
from pathlib import Path

import pytest

from orchestrator import promote as promote_module
from orchestrator.cache import output_hash
from orchestrator.promote import ASIDE, promote


class Killed(BaseException):
    pass


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    attempt = tmp_path / "work/.attempts/s/abc"
    output = tmp_path / "work/out"
    for folder, text in ((attempt, "new"), (output, "old")):
        folder.mkdir(parents=True)
        (folder / "a.txt").write_text(text)
        (folder / "b.txt").write_text(text)
    return attempt, output


def test_promote_moves_attempt_and_returns_its_hash_and_files(tmp_path: Path) -> None:
    attempt, output = _setup(tmp_path)
    (attempt / "spec.json").write_text("{}")  # the orchestrator's, not the stage's output
    expected = output_hash(attempt)
    assert promote(attempt, output) == (expected, {"a.txt": 3, "b.txt": 3})
    assert (output / "a.txt").read_text() == "new" and not attempt.exists()
    assert not (attempt.parent / ASIDE).exists()


@pytest.mark.parametrize("kill_at", ["aside", "attempt", "cleanup"])
def test_kill_between_steps(tmp_path: Path, kill_at: str, monkeypatch: pytest.MonkeyPatch) -> None:
    attempt, output = _setup(tmp_path)
    real_replace, real_rmtree = os.replace, shutil.rmtree

    def replace(src: Path, dst: Path) -> None:
        if (kill_at == "aside" and Path(dst).name == ASIDE) or (
            kill_at == "attempt" and Path(src) == attempt
        ):
            raise Killed
        real_replace(src, dst)

    def rmtree(path: Path, ignore_errors: bool = False) -> None:
        if kill_at == "cleanup" and Path(path).name == ASIDE:
            raise Killed
        real_rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(promote_module.os, "replace", replace)
    monkeypatch.setattr(promote_module.shutil, "rmtree", rmtree)
    with pytest.raises(Killed):
        promote(attempt, output)
    monkeypatch.undo()
    if output.exists():  # whatever is at the output path is one whole version
        texts = {(output / n).read_text() for n in ("a.txt", "b.txt")}
        assert texts in ({"old"}, {"new"})
    if attempt.exists():  # the stage reruns in its attempt dir; promotion then completes
        promote(attempt, output)
    assert {(output / n).read_text() for n in ("a.txt", "b.txt")} == {"new"}
    if kill_at != "cleanup":
        assert not (attempt.parent / ASIDE).exists()


def test_leftover_temp_files_are_not_promoted(tmp_path: Path) -> None:
    attempt, output = _setup(tmp_path)
    (attempt / "predictions").mkdir()
    (attempt / "predictions" / "dev_seen.csv.tmp").write_text("id,proba\n0829")  # killed write
    digest, files = promote(attempt, output)
    assert files == {"a.txt": 3, "b.txt": 3}
    assert sorted(p.relative_to(output).as_posix() for p in output.rglob("*")) == [
        "a.txt",
        "b.txt",
        "predictions",
    ]
    assert digest == output_hash(output)
