"""Images and logs a customer's data can break: 16-bit PNGs, decompression bombs, a job that crashes."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import deft_aoi.runners.local.train as train_module
from deft_aoi.errors import InputError
from deft_aoi.runners.base import explain_exit, log_tail
from deft_aoi.runners.local.data import decode_image
from deft_aoi.runners.local.joblog import JobLog
from deft_aoi.runners.local.runner import LocalRunner
from deft_aoi.workspace.layout import WorkspaceLayout

from .helpers import job, make_workspace


def bomb_png(path: Path, side: int = 20000) -> Path:
    """A valid PNG header declaring side×side px (a few hundred bytes on disk)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def test_sixteen_bit_png_is_scaled_not_saturated(tmp_path: Path) -> None:
    values = np.full((16, 16), 32768, dtype=np.uint16)
    values[:, :8] = 8192
    path = tmp_path / "deep.png"
    Image.frombytes("I;16", (16, 16), values.astype("<u2").tobytes()).save(path)
    pixels = decode_image(str(path), (16, 16))
    assert pixels.shape == (3, 16, 16)
    assert int(pixels[0, 0, 12]) == 128 and int(pixels[0, 0, 2]) == 32  # 32768 >> 8, 8192 >> 8 (clipped: 255)


def test_decompression_bomb_is_an_input_error_before_decoding(tmp_path: Path) -> None:
    path = bomb_png(tmp_path / "bomb.png")
    with pytest.raises(InputError, match="above the 64 Mpx limit") as info:
        decode_image(str(path), (64, 64))
    assert info.value.file == str(path)
    medium = bomb_png(tmp_path / "medium.png", side=9000)  # 81 Mpx: PIL would only warn, then decode it
    with pytest.raises(InputError, match="above the 64 Mpx limit"):
        decode_image(str(medium), (64, 64))


def test_job_log_is_opened_once_and_keeps_its_command_line(tmp_path: Path) -> None:
    path = tmp_path / "train.log"
    log = JobLog(path)
    log.line("visual_changenet train -e spec.yaml")
    log.mirror_to(path)  # the runner's log and TAO's train.log are the same file
    other = tmp_path / "copy" / "train.log"
    log.mirror_to(other)
    log.line("epoch 0\x00\x1b[2J done")
    log.close()
    for p in (path, other):
        data = p.read_bytes()
        assert b"\x00" not in data and b"\x1b" not in data
        assert data.decode().splitlines() == ["visual_changenet train -e spec.yaml", "epoch 0[2J done"]


def test_log_tail_drops_nul_runs_and_half_characters(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_bytes(b"ok line\n" + b"\x00" * 4096 + b"\nlast \xc3")
    tail = log_tail(path)
    assert "\x00" not in tail and tail.splitlines() == ["ok line", "last \ufffd"]


def test_crashed_local_job_keeps_its_traceback_out_of_the_log(
    deeppcb_dev: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_workspace(deeppcb_dev, tmp_path / "ws")
    runner = LocalRunner(WorkspaceLayout.at(spec.parent))

    def boom(*_: object, **__: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(train_module, "load_pairs", boom)
    out = tmp_path / "rd"
    the_job = job("train", spec, f"train.results_dir={out}", log=out / "train.log")  # as tao_commands names it
    result = runner.run(the_job)
    assert result.exit_code == 1
    data = (out / "train.log").read_bytes()
    assert b"\x00" not in data
    lines = data.decode().splitlines()
    assert lines[0].startswith("visual_changenet train -e ")
    assert "Traceback" not in data.decode()
    assert lines[-1].startswith("ERROR: the local job crashed: RuntimeError('boom') (traceback in ")
    assert "RuntimeError: boom" in (out / "train.traceback.txt").read_text()
    assert "Traceback" not in explain_exit(the_job, result)
