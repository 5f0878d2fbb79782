"""Entry point of the local TAO stand-in image (`docker/standin/`): inside a real container, the commands
`visual_changenet`, `embedding` and `tmm` run deft's fake TAO (`fake/tao.py`), printing as they go so the engine
streams the log live.

Faults are injected as with the in-memory client (`DEFT_FAKE_FAULT`, see `fake/docker_client.py`), but acted out for
real: `hang` prints a heartbeat until the engine stops the container; `oom` allocates memory until the
container's memory limit gets it OOM-killed. `once` markers live in `DEFT_FAKE_STATE_DIR` (inside the mounted
workspace, so a resumed run's next container sees them). Data Services' start-up trap is real too: it looks
the calling uid up in /etc/passwd, so under `--user` with an unknown uid it fails as the real container does.

TAO's rules (tao/rules.py, as the in-memory client enforces them) apply for the release of `DEFT_FAKE_TAO_IMAGE`
(an image reference such as `nvcr.io/nvidia/tao/tao-toolkit:7.0.0-data-services`); unset, the stand-in is
the release the rules assume for an untagged image, as the fake client does for the stand-in's own tag.

Only the standard library, numpy, pandas, pyarrow, PyYAML, Pillow and pydantic are needed (what the image
installs); docker-py is not.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from deft_aoi.errors import InputError
from deft_aoi.runners.fake import tao as fake_tao
from deft_aoi.runners.fake.docker_client import FAULT_ENV, STATE_ENV, parse_faults, pick_fault
from deft_aoi.runners.tao.commands import DS_SPEC_DIR

PROGRAMS = ("visual_changenet", "embedding", "tmm")
OOM_CAP_ENV = "DEFT_FAKE_OOM_MB"  # where `oom` gives up without a memory limit (never eat the host)
TAO_IMAGE_ENV = "DEFT_FAKE_TAO_IMAGE"  # the TAO release whose rules the stand-in enforces
_CHUNK = 16 << 20


def _print(line: str) -> None:
    print(line, flush=True)


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    # PID 1 in a container ignores SIGTERM unless it installs a handler; `docker stop` would wait it out.
    raise SystemExit(143)


def hang(task: str) -> int:
    """Run until stopped, printing a heartbeat (the log-streaming tests read it while the job runs)."""
    _print(f"{task}: started; this job hangs until it is stopped (DEFT_FAKE_FAULT)")
    beat = 0
    while True:
        beat += 1
        _print(f"{task}: heartbeat {beat}")
        time.sleep(1.0)


def exhaust_memory(task: str) -> int:
    """Touch memory until the kernel's OOM killer ends the container (exit 137, OOMKilled)."""
    cap_mb = int(os.environ.get(OOM_CAP_ENV, "4096"))
    held: list[bytearray] = []
    while len(held) * (_CHUNK >> 20) < cap_mb:
        held.append(bytearray(b"\x01") * _CHUNK)  # filled, so every page is resident
    _print(f"{task}: allocated {cap_mb} MiB without hitting a memory limit; giving up")
    _print("Killed")
    return 137


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if not args or args[0] not in PROGRAMS:
        _print(f"usage: {{{','.join(PROGRAMS)}}} ARGS...; got {args}")
        return 2
    try:
        faults = parse_faults(os.environ.get(FAULT_ENV))
    except InputError as exc:
        _print(exc.render())
        return 2
    marker_dir = Path(os.environ.get(STATE_ENV) or tempfile.gettempdir())
    out = fake_tao.Execution(echo=_print)
    program = args[0]
    image = os.environ.get(TAO_IMAGE_ENV) or None
    if program == "visual_changenet":
        task = args[1] if len(args) > 1 else ""
        fault = pick_fault(faults, task, marker_dir)
        acted = fake_tao.run_changenet_command(args, out, fault.kind if fault else None, image=image)
    else:
        task = program
        import pwd

        from deft_aoi.runners.tao.rules import mining_engine_rule

        if mining_engine_rule("data_services", image).failed:  # a release without these entry points
            _print(f'exec: "{program}": executable file not found in $PATH')
            return 127

        try:
            pwd.getpwuid(os.getuid())
        except KeyError:
            _print(f"KeyError: 'getpwuid(): uid not found: {os.getuid()}'")
            return 1
        workdir = os.getcwd()
        fault = pick_fault(faults, program, marker_dir) if os.path.isdir(DS_SPEC_DIR) else None
        acted = fake_tao.run_data_services_command(args, out, workdir, fault.kind if fault else None)
    if acted in ("slow", "slowfail") and program == "visual_changenet":
        seconds = fake_tao.slow_seconds()
        _print(f"{task}: started; this job takes {seconds:g}s (DEFT_FAKE_FAULT {acted})")
        deadline = time.monotonic() + seconds
        beat = 0
        while time.monotonic() < deadline:
            beat += 1
            _print(f"{task}: heartbeat {beat}")
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        out = fake_tao.Execution(echo=_print)
        fake_tao.run_changenet_command(args, out, fake_tao.after_slow(acted), image=image)
        return out.exit_code
    if acted == "hang":
        return hang(task)
    if acted == "oom":
        return exhaust_memory(task)
    return out.exit_code


if __name__ == "__main__":
    sys.exit(main())
