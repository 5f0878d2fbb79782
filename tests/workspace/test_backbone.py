"""`deft fetch-backbone` / `deft init --fetch-backbone` against a local server that speaks the Hub's file API
(HF_ENDPOINT): never the internet. The server answers HEAD and GET on /<repo>/resolve/<revision>/<file> with
the headers huggingface_hub reads (X-Repo-Commit, X-Linked-Etag = the LFS sha256, X-Linked-Size) and honours
Range requests, so an interrupted download can be resumed."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deft_aoi.cli.app import app
from deft_aoi.config import BACKBONE_FILENAME, BACKBONE_REPO_ID
from deft_aoi.workspace.scaffold import init_workspace

pytest.importorskip("huggingface_hub")

TOKEN = "hf_testtoken_9f8e7d6c5b4a"
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB of weights
STAGED = Path("augmentation/backbone/c_radio_v2_b.safetensors")  # what the template spec names


@dataclass
class Hub:
    url: str
    payload: bytes = PAYLOAD
    advertised_sha256: str = hashlib.sha256(PAYLOAD).hexdigest()
    cut_first_get: bool = False  # send half the body of the first GET, then drop the connection
    requests: list[tuple[str, str, str | None, str | None]] = field(default_factory=list)


@pytest.fixture()
def hub() -> Iterator[Hub]:
    state = Hub(url="")
    resolve = f"/{BACKBONE_REPO_ID}/resolve/main/{BACKBONE_FILENAME}"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet test output
            pass

        def _record(self) -> bool:
            state.requests.append((self.command, self.path, self.headers.get("Range"),
                                   self.headers.get("Authorization")))
            if self.path != resolve:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False
            return True

        def _meta(self, status: int, length: int) -> None:
            self.send_response(status)
            self.send_header("X-Repo-Commit", "c" * 40)
            self.send_header("ETag", f'"{state.advertised_sha256}"')
            self.send_header("X-Linked-Etag", f'"{state.advertised_sha256}"')
            self.send_header("X-Linked-Size", str(len(state.payload)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(length))

        def do_HEAD(self) -> None:
            if self._record():
                self._meta(200, len(state.payload))
                self.end_headers()

        def do_GET(self) -> None:
            if not self._record():
                return
            start = 0
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes="):
                start = int(rng.removeprefix("bytes=").split("-")[0])
            body = state.payload[start:]
            self._meta(206 if start else 200, len(body))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(state.payload) - 1}/{len(state.payload)}")
            self.end_headers()
            gets = sum(1 for r in state.requests if r[0] == "GET" and r[1] == resolve)
            if state.cut_first_get and gets == 1:
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)  # the peer sees a truncated body, as on a dropped link
                return
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def _ws(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    init_workspace(ws)
    (ws / ".env").write_text(f"HF_TOKEN={TOKEN}\n")
    return ws


def _deft(hub: Hub, *args: str) -> object:
    return CliRunner().invoke(app, list(args), env={"HF_ENDPOINT": hub.url, "HF_TOKEN": "", "NO_COLOR": "1",
                                                    "HF_HUB_DISABLE_PROGRESS_BARS": "1"})


def test_fetch_backbone_stages_the_file_the_spec_names_with_the_env_token(hub: Hub, tmp_path: Path) -> None:
    ws = _ws(tmp_path)
    result = _deft(hub, "fetch-backbone", "-w", str(ws))
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    staged = ws / STAGED
    assert staged.read_bytes() == PAYLOAD
    assert "downloaded" in result.output and str(staged) in result.output  # type: ignore[attr-defined]
    assert TOKEN not in result.output  # type: ignore[attr-defined]
    files = [r for r in hub.requests if "/resolve/" in r[1]]
    assert files and {auth for *_, auth in files} == {f"Bearer {TOKEN}"}  # the token from .env reached the Hub
    assert sorted(p.name for p in staged.parent.iterdir()) == [staged.name]  # no partial file left
    # A second call finds the file staged with the Hub's checksum: no download.
    gets = sum(1 for r in hub.requests if r[0] == "GET" and "/resolve/" in r[1])
    again = _deft(hub, "fetch-backbone", "-w", str(ws))
    assert again.exit_code == 0 and "already staged" in again.output  # type: ignore[attr-defined]
    assert sum(1 for r in hub.requests if r[0] == "GET" and "/resolve/" in r[1]) == gets


def test_an_interrupted_download_resumes_with_a_range_request(hub: Hub, tmp_path: Path) -> None:
    ws = _ws(tmp_path)
    staged = ws / STAGED
    # What a run stopped halfway (Ctrl-C, a lost link) leaves: half the file and the Hub version it belongs to.
    half = len(PAYLOAD) // 2
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.with_name(staged.name + ".part").write_bytes(PAYLOAD[:half])
    staged.with_name(staged.name + ".part.etag").write_text(hub.advertised_sha256 + "\n")
    result = _deft(hub, "init", "-w", str(ws), "--fetch-backbone")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert staged.read_bytes() == PAYLOAD
    assert [rng for method, path, rng, _ in hub.requests if method == "GET" and "/resolve/" in path] == [
        f"bytes={half}-"]


def test_a_dropped_link_is_retried_within_the_call(hub: Hub, tmp_path: Path) -> None:
    hub.cut_first_get = True
    ws = _ws(tmp_path)
    result = _deft(hub, "fetch-backbone", "-w", str(ws))
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert (ws / STAGED).read_bytes() == PAYLOAD


def test_a_file_that_does_not_match_the_hubs_checksum_is_not_staged(hub: Hub, tmp_path: Path) -> None:
    hub.advertised_sha256 = "0" * 64
    ws = _ws(tmp_path)
    result = _deft(hub, "fetch-backbone", "-w", str(ws))
    assert result.exit_code != 0
    assert "checksum" in result.output  # type: ignore[attr-defined]
    assert not (ws / STAGED).exists()


def test_a_spec_without_a_backbone_path_needs_dest(hub: Hub, tmp_path: Path) -> None:
    ws = _ws(tmp_path)
    spec = ws / "specs" / "baseline_spec.yaml"
    spec.write_text(spec.read_text().replace("pretrained_backbone_path: augmentation/backbone/c_radio_v2_b.safetensors",
                                             "pretrained_backbone_path: null"))
    assert _deft(hub, "fetch-backbone", "-w", str(ws)).exit_code == 2  # type: ignore[attr-defined]
    dest = tmp_path / "elsewhere" / "radio.safetensors"
    result = _deft(hub, "fetch-backbone", "-w", str(ws), "--dest", str(dest))
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert dest.read_bytes() == PAYLOAD
