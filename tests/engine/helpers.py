"""Shared by the real-engine tests: workspaces that point at the stand-in image, and `deft` as a subprocess
(so Ctrl-C and SIGKILL land on a real process, as a user's would)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

# Values no real key has, so a hit anywhere can only be a leak.
SECRETS = {"NGC_API_KEY": "nvapi-deft-test-Zq7Xk2Lm9Pw4", "HF_TOKEN": "hf_deftTestTokenR8s3Vb6Nt1"}
LOOP = ["--epochs", "2", "--seed", "1"]
BACKBONE = "augmentation/backbone/c_radio_v2_b.safetensors"


def engine_workspace(source: Path, dest: Path, image: str, *, owner: int | None = None) -> Path:
    """A copy of `source` whose versions.yaml names `image` for both TAO images, with a `.env` of fake secrets
    and a staged backbone file."""
    shutil.copytree(source, dest)
    (dest / "versions.yaml").write_text(
        f"images:\n  tao_toolkit:\n    pyt: {image}\n    data_services: {image}\n", encoding="utf-8")
    (dest / ".env").write_text("".join(f"{k}={v}\n" for k, v in SECRETS.items()), encoding="utf-8")
    # Real TAO needs backbone weights staged in the workspace (pre-flight refuses a null path); the stand-in
    # never reads them, so placeholder bytes do.
    backbone = dest / BACKBONE
    backbone.parent.mkdir(parents=True, exist_ok=True)
    backbone.write_bytes(b"placeholder weights: the stand-in image does not load them")
    spec = dest / "specs" / "baseline_spec.yaml"
    text = spec.read_text(encoding="utf-8")
    assert "pretrained_backbone_path: null" in text, "the reference spec changed: stage the backbone differently"
    spec.write_text(text.replace("pretrained_backbone_path: null", f"pretrained_backbone_path: {BACKBONE}"),
                    encoding="utf-8")
    for path in (dest, *dest.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
        if owner is not None:
            os.chown(path, owner, owner)
    return dest


def deft_env(ws: Path, **extra: str) -> dict[str, str]:
    """The caller's environment minus deft's own knobs, plus what a CPU-only engine needs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEFT_")}
    env.update({"NO_COLOR": "1", "COLUMNS": "200", "DEFT_DOCKER_GPUS": "0",
                "DEFT_FAKE_STATE_DIR": str(ws / ".deft_cache" / "fake_docker")})
    env.update(extra)
    return env


def _world_usable(path: Path) -> bool:
    """Another uid can reach `path` (every parent dir o+x) and read / execute it."""
    path = path.resolve()
    for parent in path.parents:
        if not parent.stat().st_mode & stat.S_IXOTH:
            return False
    mode = path.stat().st_mode
    return bool(mode & stat.S_IROTH) and (not path.is_file() or not os.access(path, os.X_OK)
                                          or bool(mode & stat.S_IXOTH))


def python_for_another_user() -> tuple[list[str], dict[str, str]] | str:
    """(interpreter argv, extra env) with which another uid can run this checkout's deft, or why it cannot.

    A venv's python often links to an interpreter under /root (pyenv); Debian's own python3 of the same
    minor version then runs with this venv's packages and the source tree on PYTHONPATH."""
    import site

    import deft_aoi

    src = Path(deft_aoi.__file__).resolve().parents[1]
    packages = [Path(p) for p in site.getsitepackages()]
    if not all(_world_usable(p) for p in [src, *packages]):
        return f"the source tree {src} or the venv's packages are not readable by another uid"
    if _world_usable(Path(sys.executable)):
        return [sys.executable], {}
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if system.is_file() and _world_usable(system):
        return [str(system)], {"PYTHONPATH": os.pathsep.join(map(str, [src, *packages])), "PYTHONNOUSERSITE": "1"}
    return f"{sys.executable} is not usable by another uid and {system} is missing"


def start_deft(args: list[str], env: Mapping[str, str], python: list[str] | None = None,
               **popen: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([*(python or [sys.executable]), "-m", "deft_aoi.cli", *args], env=dict(env), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def run_deft(args: list[str], env: Mapping[str, str], timeout: float = 900, **popen: Any) -> tuple[int, str]:
    """`deft ARGS` to completion: (exit code, stdout + stderr)."""
    proc = start_deft(args, env, **popen)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"deft {' '.join(args)} ran past {timeout}s:\n{out[-3000:]}") from None
    return proc.returncode, out


def only_run(ws: Path) -> Path:
    runs = sorted((ws / "results").glob("run_*"))
    assert len(runs) == 1, runs
    return runs[0]


def state(run: Path) -> dict[str, Any]:
    return json.loads((run / "deft_state.json").read_text(encoding="utf-8"))


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def labelled(client: Any, **labels: str) -> list[Any]:
    """Containers (any state) carrying every `deft-aoi.<key>=<value>` label."""
    return client.containers.list(all=True, filters={"label": [f"deft-aoi.{k}={v}" for k, v in labels.items()]})


def heartbeat_log(ws: Path) -> Path | None:
    """The baseline train log of the one run, while the stage is still in its scratch dir."""
    runs = sorted((ws / "results").glob("run_*"))
    log = runs[0] / ".scratch" / "baseline" / "train" / "train.log" if runs else None
    return log if log is not None and log.is_file() else None


def interrupt(proc: subprocess.Popen[str], sig: signal.Signals) -> tuple[int, str]:
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, out
