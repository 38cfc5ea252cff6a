"""`orchestrator weights fetch` against a real HTTP server on 127.0.0.1: plain files, members of
a tar.gz (a directory and a file, one download for both), no-op rerun, and the failures: 404, a
truncated body, a member that is not there, an entry that climbs out of its folder."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hm_shared.errors import HmDataError
from orchestrator.recipes import DETECTOR_WEIGHTS
from orchestrator.weights import extract_member

ORCHESTRATOR = str(Path(sys.executable).parent / "orchestrator")
PARAMS = {"encoder_layer_0_ffn_fc_0.w_0": b"\x01" * 64, "image_emb.b_0": b"\x02" * 16}


@dataclass
class Server:
    root: Path
    url: str
    hits: Counter = field(default_factory=Counter)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "served"
    root.mkdir()
    hits: Counter = Counter()

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self) -> None:
            hits[self.path] += 1
            if self.path == "/truncated.pt":  # promises 1000 bytes, sends 10, hangs up
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b"0123456789")
                self.close_connection = True
                return
            super().do_GET()

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield Server(root, f"http://127.0.0.1:{httpd.server_address[1]}", hits)
    httpd.shutdown()
    httpd.server_close()


def ernie_tarball(path: Path, extra: dict[str, bytes] | None = None) -> None:
    """A tar.gz laid out like the released ones: a top folder with params/ and vocab.txt; the
    params/ folder has no entry of its own (only its files), as some tar writers do."""
    members = {f"model-ernie/params/{k}": v for k, v in PARAMS.items()}
    members |= {"model-ernie/vocab.txt": b"[PAD]\n[CLS]\n[SEP]\n", **(extra or {})}
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def recipes(tmp_path: Path, url: str, uniter: str = "uniter-large.pt") -> Path:
    path = tmp_path / "recipes.toml"
    tar = f"{url}/model-ernie.tar.gz"
    path.write_text(f"""
[extract.vgattr3636]
weights = "attr"
min_boxes = 36
max_boxes = 36

[models.U]
env = "torch"
weights = [
    {{ file = "uniter-large.pt", source = "{url}/{uniter}" }},
    {{ file = "bert-large-cased-vocab.txt", source = "{url}/vocab.txt" }},
]

[[models.U.runs]]
name = "U36"
seed = 36
features = "vgattr3636"

[models.ES]
env = "paddle"
weights = [
    {{ file = "ernie-vil-base/params", source = "{tar}", member = "params" }},
    {{ file = "ernie-vil-base/vocab.txt", source = "{tar}", member = "vocab.txt" }},
]

[[models.ES.runs]]
name = "ES36"
seed = 36
features = "vgattr3636"
""")
    return path


def data_dir(tmp_path: Path) -> Path:
    """A data dir that already holds the detector pickle (its real source is not reachable)."""
    data = tmp_path / "data"
    (data / "weights").mkdir(parents=True)
    (data / "weights" / DETECTOR_WEIGHTS["attr"].file).write_bytes(b"detector")
    return data


def fetch(recipe: Path, data: Path, models: str = "U,ES") -> subprocess.CompletedProcess[str]:
    cmd = [ORCHESTRATOR, "weights", "fetch", "--recipes", str(recipe), "--data", str(data)]
    return subprocess.run(
        [*cmd, "--models", models], capture_output=True, text=True, timeout=120, check=False
    )


def leftovers(weights: Path) -> list[str]:
    return sorted(p.name for p in weights.rglob("*") if p.name.endswith(".part")) + sorted(
        p.name for p in weights.glob(".downloads")
    )


def test_fetch_downloads_files_and_archive_members_once(server: Server, tmp_path: Path) -> None:
    (server.root / "uniter-large.pt").write_bytes(bytes(range(256)) * 4000)  # ~1 MB: 2 chunks
    (server.root / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    ernie_tarball(server.root / "model-ernie.tar.gz")
    recipe, data = recipes(tmp_path, server.url), data_dir(tmp_path)

    done = fetch(recipe, data)
    assert done.returncode == 0, done.stderr
    weights = data / "weights"
    assert (weights / "uniter-large.pt").read_bytes() == (
        server.root / "uniter-large.pt"
    ).read_bytes()
    assert (weights / "bert-large-cased-vocab.txt").read_text() == "[PAD]\n[UNK]\n"
    params = weights / "ernie-vil-base" / "params"
    assert {p.name: p.read_bytes() for p in params.iterdir()} == PARAMS
    assert (weights / "ernie-vil-base" / "vocab.txt").read_bytes() == b"[PAD]\n[CLS]\n[SEP]\n"
    assert server.hits["/model-ernie.tar.gz"] == 1  # one download for both members
    assert leftovers(weights) == []
    assert "4 fetched, 1 already present" in done.stdout

    # everything present: nothing is requested again
    before = sum(server.hits.values())
    again = fetch(recipe, data)
    assert again.returncode == 0, again.stderr
    assert sum(server.hits.values()) == before
    assert "0 fetched, 5 already present" in again.stdout


def test_archive_url_with_a_query_string(server: Server, tmp_path: Path) -> None:
    # a signed URL (Oscar's SAS token): the archive is still recognised by its path
    ernie_tarball(server.root / "model-ernie.tar.gz")
    recipe, data = recipes(tmp_path, server.url), data_dir(tmp_path)
    recipe.write_text(recipe.read_text().replace(".tar.gz", ".tar.gz?sv=2020&sig=abc"))
    done = fetch(recipe, data, "ES")
    assert done.returncode == 0, done.stderr
    params = data / "weights" / "ernie-vil-base" / "params"
    assert {p.name: p.read_bytes() for p in params.iterdir()} == PARAMS
    assert server.hits["/model-ernie.tar.gz?sv=2020&sig=abc"] == 1


def test_http_error_names_the_url_and_the_file_and_leaves_nothing(
    server: Server, tmp_path: Path
) -> None:
    recipe, data = recipes(tmp_path, server.url), data_dir(tmp_path)  # nothing served
    done = fetch(recipe, data, "U")
    assert done.returncode == 3
    assert f"{server.url}/uniter-large.pt: HTTP 404" in done.stderr
    assert str(data / "weights" / "uniter-large.pt") in done.stderr
    assert not (data / "weights" / "uniter-large.pt").exists()
    assert leftovers(data / "weights") == []


def test_truncated_download_is_not_kept(server: Server, tmp_path: Path) -> None:
    recipe, data = recipes(tmp_path, server.url, uniter="truncated.pt"), data_dir(tmp_path)
    done = fetch(recipe, data, "U")
    assert done.returncode == 3
    assert "stopped after 10 of 1000 bytes" in done.stderr
    assert not (data / "weights" / "uniter-large.pt").exists()
    assert leftovers(data / "weights") == []


def test_archive_without_the_member_lists_what_it_holds(server: Server, tmp_path: Path) -> None:
    with tarfile.open(server.root / "model-ernie.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("other-model/readme.txt")
        tar.addfile(info, io.BytesIO(b""))
    recipe, data = recipes(tmp_path, server.url), data_dir(tmp_path)
    done = fetch(recipe, data, "ES")
    assert done.returncode == 3
    assert "archive holds no 'params'; its top-level entries: ['other-model']" in done.stderr
    assert not (data / "weights" / "ernie-vil-base" / "params").exists()


def test_entry_climbing_out_of_the_member_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    ernie_tarball(archive, {"model-ernie/params/../../../escaped.txt": b"gotcha"})
    target = tmp_path / "out" / "params"
    with pytest.raises(HmDataError, match="points outside its folder; refused"):
        extract_member(archive, "params", target)
    assert not target.exists() and not list(tmp_path.rglob("escaped.txt"))


def test_links_in_a_member_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("m/params/w_0")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(HmDataError, match=r"holds links or devices \(m/params/w_0\); refused"):
        extract_member(archive, "params", tmp_path / "params")


def test_a_file_and_a_folder_of_one_name_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "clash.tar.gz"
    ernie_tarball(archive, {"m/params/w_0": b"file", "m/params/w_0/inner": b"under it"})
    target = tmp_path / "out" / "params"
    with pytest.raises(HmDataError, match=r"holds m/params/w_0 both as a file and as a folder"):
        extract_member(archive, "params", target)
    assert not target.exists() and not (tmp_path / "out" / "params.part").exists()


def test_zip_member_file_by_path_suffix(tmp_path: Path) -> None:
    archive = tmp_path / "large-vg-labels.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("large-vg-labels/ep_20_590000/pytorch_model.bin", b"weights")
        zf.writestr("large-vg-labels/ep_20_590000/config.json", b"{}")
    target = tmp_path / "oscar" / "pytorch_model.bin"
    extract_member(archive, "ep_20_590000/pytorch_model.bin", target)
    assert target.read_bytes() == b"weights"


def test_manual_weight_is_named_with_its_note_and_the_rest_is_fetched(
    server: Server, tmp_path: Path
) -> None:
    # DeVLBERT's checkpoint sits behind a file host's confirmation page: nothing to download
    (server.root / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    recipe, data = recipes(tmp_path, server.url), data_dir(tmp_path)
    by_hand = (
        f'{{ file = "devlbert/pytorch_model_11.bin", source = "{server.url}/drive/view", '
        'manual = true, note = "download it in a browser" }'
    )
    recipe.write_text(
        recipe.read_text()
        + f"""
[models.D]
env = "torch"
weights = [
    {by_hand},
    {{ file = "bert-base-uncased-vocab.txt", source = "{server.url}/vocab.txt" }},
]

[[models.D.runs]]
name = "D36"
seed = 147
features = "vgattr3636"
"""
    )
    done = fetch(recipe, data, "D")
    assert done.returncode == 3, done.stderr
    weights = data / "weights"
    assert (weights / "bert-base-uncased-vocab.txt").read_text() == "[PAD]\n[UNK]\n"
    assert server.hits["/drive/view"] == 0  # a page for people, never requested
    message = " ".join(done.stderr.split())
    assert f"{weights / 'devlbert' / 'pytorch_model_11.bin'}" in message
    assert "download it in a browser" in message and "1 fetched" in message

    (weights / "devlbert").mkdir()
    (weights / "devlbert" / "pytorch_model_11.bin").write_bytes(b"by hand")
    again = fetch(recipe, data, "D")
    assert again.returncode == 0, again.stderr
    assert "0 fetched, 3 already present" in again.stdout


def test_manual_weight_needs_a_note(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from orchestrator.recipes import Weight

    with pytest.raises(ValidationError, match="give a note"):
        Weight(file="x.bin", source="https://example.org/x", manual=True)


def _plan_full(recipe: Path, data: Path, models: str) -> subprocess.CompletedProcess[str]:
    cmd = [ORCHESTRATOR, "plan", "--recipes", str(recipe), "--data", str(data)]
    cmd += ["--models", models, "--profile", "full"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def _run_full(recipe: Path, data: Path, models: str) -> subprocess.CompletedProcess[str]:
    cmd = [ORCHESTRATOR, "run", "--recipes", str(recipe), "--data", str(data)]
    cmd += ["--models", models, "--profile", "full"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_fetch_records_a_lock_and_plan_and_run_check_it(server: Server, tmp_path: Path) -> None:
    import hashlib
    import json

    body = bytes(range(256)) * 40
    (server.root / "uniter-large.pt").write_bytes(body)
    (server.root / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    ernie_tarball(server.root / "model-ernie.tar.gz")
    recipe, data = recipes(tmp_path, server.url), data_dir(tmp_path)
    assert fetch(recipe, data).returncode == 0
    weights = data / "weights"
    lock = json.loads((weights / "weights.lock.json").read_text())
    assert lock["format_version"] == 1
    entry = lock["files"]["uniter-large.pt"]
    assert entry == {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
    params = lock["files"]["ernie-vil-base/params"]  # a directory: all its files
    assert params["size"] == sum(len(v) for v in PARAMS.values())
    assert set(lock["files"]) == {
        "uniter-large.pt",
        "bert-large-cased-vocab.txt",
        "ernie-vil-base/params",
        "ernie-vil-base/vocab.txt",
        DETECTOR_WEIGHTS["attr"].file,  # found in place: recorded as it is
    }
    planned = _plan_full(recipe, data, "U")
    assert planned.returncode == 0 and "differ from what was fetched" not in planned.stdout

    # a truncated file, then one changed in place: named by plan, refused by run (exit 3)
    (weights / "uniter-large.pt").write_bytes(body[:1000])
    planned = _plan_full(recipe, data, "U")
    assert f"{weights / 'uniter-large.pt'}: 1000 bytes, {len(body)} when it was fetched" in (
        planned.stdout
    )
    refused = _run_full(recipe, data, "U")
    message = " ".join(refused.stderr.split())
    assert refused.returncode == 3, refused.stderr
    assert "orchestrator weights fetch --models U" in message
    assert not (data / "work" / "runs").exists()  # nothing ran
    (weights / "uniter-large.pt").write_bytes(body[::-1])
    refused = _run_full(recipe, data, "U")
    assert refused.returncode == 3 and "content changed since it was fetched" in refused.stderr
    assert fetch(recipe, data).returncode == 3  # fetch never records over a changed file

    # the way out the message names: remove it, fetch again
    (weights / "uniter-large.pt").unlink()
    assert fetch(recipe, data).returncode == 0
    assert (weights / "uniter-large.pt").read_bytes() == body
    assert "differ" not in _plan_full(recipe, data, "U").stdout


def test_a_pinned_checksum_is_checked_on_download(server: Server, tmp_path: Path) -> None:
    import hashlib

    body = b"resnet weights" * 100
    (server.root / "uniter-large.pt").write_bytes(body)
    (server.root / "vocab.txt").write_text("[PAD]\n")
    good = hashlib.sha256(body).hexdigest()
    recipe, data = recipes(tmp_path, server.url), data_dir(tmp_path)
    text = recipe.read_text()
    pin = f'source = "{server.url}/uniter-large.pt"'
    recipe.write_text(text.replace(pin, f'{pin}, sha256 = "{"0" * 8}"'))
    refused = fetch(recipe, data, "U")
    assert refused.returncode == 3
    message = " ".join(refused.stderr.split())
    assert f"has sha256 {good}, the recipe pins 00000000: not placed" in message
    assert not (data / "weights" / "uniter-large.pt").exists()
    assert leftovers(data / "weights") == []

    recipe.write_text(text.replace(pin, f'{pin}, sha256 = "{good[:8]}"'))
    assert fetch(recipe, data, "U").returncode == 0
    # a file put in place by hand that does not match the pin is named by plan
    (data / "weights" / "uniter-large.pt").write_bytes(b"other" * 10)
    (data / "weights" / "weights.lock.json").unlink()
    planned = _plan_full(recipe, data, "U")
    assert f"does not match the recipe's pinned {good[:8]}" in planned.stdout


def test_sha256_pins_are_hex_prefixes(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from orchestrator.recipes import Weight

    assert Weight(file="r.pth", source="https://x.org/r.pth", sha256="f82ba261").sha256
    for bad in ("f82b", "F82BA261", "xyz12345"):
        with pytest.raises(ValidationError):
            Weight(file="r.pth", source="https://x.org/r.pth", sha256=bad)


def test_planted_part_links_are_removed_not_followed(server: Server, tmp_path: Path) -> None:
    # someone with write access to data/weights plants `<file>.part` and `<dir>.part` links
    # pointing outside it: the fetch must not write through them
    (server.root / "uniter-large.pt").write_bytes(b"weights" * 100)
    (server.root / "vocab.txt").write_text("[PAD]\n")
    ernie_tarball(server.root / "model-ernie.tar.gz")
    recipe, data = recipes(tmp_path, server.url), data_dir(tmp_path)
    outside_file = tmp_path / "outside.txt"
    outside_file.write_text("keep me")
    outside_dir = tmp_path / "outside"
    outside_dir.mkdir()
    (outside_dir / "mine").write_text("keep me too")
    weights = data / "weights"
    (weights / "uniter-large.pt.part").symlink_to(outside_file)
    (weights / "ernie-vil-base").mkdir()
    (weights / "ernie-vil-base" / "params.part").symlink_to(outside_dir, target_is_directory=True)
    (weights / ".downloads").symlink_to(outside_dir, target_is_directory=True)

    done = fetch(recipe, data)
    assert done.returncode == 0, done.stderr
    assert outside_file.read_text() == "keep me"
    assert sorted(p.name for p in outside_dir.iterdir()) == ["mine"]
    assert (weights / "uniter-large.pt").read_bytes() == b"weights" * 100
    assert {p.name for p in (weights / "ernie-vil-base" / "params").iterdir()} == set(PARAMS)
    assert not any(p.is_symlink() for p in weights.rglob("*"))
