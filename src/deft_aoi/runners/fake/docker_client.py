"""An in-memory stand-in for the parts of docker-py's client that DockerRunner calls.

`client.containers.run/create/get/list`, container `start/wait/logs/stop/kill/remove/reload`,
`client.images.get/pull/get_registry_data`, `client.api.pull` (streamed progress), `client.login`,
`client.ping`. Errors are docker-py's own exception classes, so the runner handles both clients alike.
Containers "run" the TAO entrypoints through `fake/tao.py`, writing the files TAO would write.

Fault injection, from `DEFT_FAKE_FAULT` (comma-separated `task:kind[:once]`), e.g.
`train:exit1`, `train:oom`, `inference:hang`, `train:partial`, `inference:missing_image`, `pull:fail`,
`evaluate:exit1:once`, `export:exit1:once`, `train:slow:once` (runs DEFT_FAKE_SLOW_S seconds first; `slowfail`
then fails).
Tasks: train, inference, evaluate, export, embedding, tmm, pull, or `*` for any job.
A `once` fault fires the first time only; a marker file in the client's state dir remembers that across
processes, so a resumed run succeeds (`DEFT_FAKE_STATE_DIR` names that dir where no client is handed one).
The docker runner passes every `DEFT_FAKE_*` variable on to containers, where the stand-in image
(`standin_entry`) acts the faults out for real. `DEFT_FAKE_IMAGES=absent` starts with no image present (pull path);
`DEFT_FAKE_GPUS="2x24564"` sets what nvidia-smi reports (count x MiB; default one 48 GB GPU).
"""

from __future__ import annotations

import itertools
import os
import shlex
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deft_aoi.errors import InputError
from deft_aoi.runners.fake import tao as fake_tao
from deft_aoi.runners.tao.commands import DS_SPEC_DIR

FAULT_ENV = "DEFT_FAKE_FAULT"
IMAGES_ENV = "DEFT_FAKE_IMAGES"
GPUS_ENV = "DEFT_FAKE_GPUS"
STATE_ENV = "DEFT_FAKE_STATE_DIR"  # where `once` markers live when no state dir is given
PASSTHROUGH_PREFIX = "DEFT_FAKE_"
FAULT_KINDS = ("exit1", "oom", "hang", "partial", "missing_image", "fail", "interrupted", "slow", "slowfail")
FAULT_TASKS = ("train", "inference", "evaluate", "export", "embedding", "tmm", "pull", "*")
DEFAULT_GPUS = "1x49140"  # one 48 GB card, as nvidia-smi reports it in MiB
GPU_NAME = "NVIDIA RTX 6000 Ada Generation"


@dataclass(frozen=True)
class Fault:
    task: str
    kind: str
    once: bool = False

    @property
    def marker(self) -> str:
        return f"fault_{self.task.replace('*', 'any')}_{self.kind}.fired"


def parse_faults(text: str | None) -> tuple[Fault, ...]:
    """`train:oom,inference:hang:once` → Faults. Unknown tasks/kinds are errors (a typo would test nothing)."""
    faults = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        parts = item.split(":")
        once = parts[-1] == "once"
        if once:
            parts = parts[:-1]
        if len(parts) != 2 or parts[0] not in FAULT_TASKS or parts[1] not in FAULT_KINDS:
            raise InputError(
                f"{FAULT_ENV}: cannot parse {item!r}; write task:kind[:once] with task in "
                f"{', '.join(FAULT_TASKS)} and kind in {', '.join(FAULT_KINDS)}"
            )
        faults.append(Fault(parts[0], parts[1], once))
    return tuple(faults)


def passthrough_env() -> dict[str, str]:
    """The caller's DEFT_FAKE_* settings, for a container running the stand-in image (docker/standin) to act
    on; TAO's own images ignore them. Never secrets: the prefix is ours."""
    return {k: v for k, v in os.environ.items() if k.startswith(PASSTHROUGH_PREFIX)}


def pick_fault(faults: Sequence[Fault], task: str, marker_dir: Path, *, consume: bool = True) -> Fault | None:
    """The fault that applies to `task` now; a `once` fault leaves a marker in `marker_dir` when consumed."""
    for fault in faults:
        if fault.task not in (task, "*") or (fault.task == "*" and task == "pull"):
            continue
        if fault.once:
            marker = marker_dir / fault.marker
            if marker.exists():
                continue
            if consume:
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%S"), encoding="utf-8")
        return fault
    return None


def _errors() -> Any:
    import docker.errors

    return docker.errors


class FakeImage:
    def __init__(self, name: str) -> None:
        self.tags = [name]
        self.id = "sha256:" + format(abs(hash(name)), "x").rjust(64, "0")[:64]


class FakeImages:
    def __init__(self, client: FakeDockerClient) -> None:
        self._client = client

    def get(self, name: str) -> FakeImage:
        if name not in self._client.present_images:
            raise _errors().ImageNotFound(f"No such image: {name}")
        return FakeImage(name)

    def get_registry_data(self, name: str, auth_config: Mapping[str, str] | None = None) -> dict[str, str]:
        if self._client.fault_for("pull", consume=False) is not None:
            raise _errors().APIError(f"Get https://nvcr.io/v2/: unauthorized: authentication required ({name})")
        return {"name": name}

    def pull(self, repository: str, tag: str | None = None, **_: Any) -> FakeImage:
        for _event in self._client.api.pull(repository, tag=tag, stream=True, decode=True):
            pass
        return self.get(f"{repository}:{tag}" if tag else repository)


class FakeAPI:
    def __init__(self, client: FakeDockerClient) -> None:
        self._client = client

    def pull(self, repository: str, tag: str | None = None, stream: bool = False, decode: bool = False,
             auth_config: Mapping[str, str] | None = None, **_: Any) -> Iterator[dict[str, Any]]:
        name = f"{repository}:{tag}" if tag else repository
        if self._client.fault_for("pull") is not None:
            raise _errors().APIError(f"pull access denied for {name}: unauthorized: authentication required")
        return self._events(name)

    def _events(self, name: str) -> Iterator[dict[str, Any]]:
        total = 4
        for layer in ("a1", "b2"):
            for current in range(1, total + 1):
                yield {"status": "Downloading", "id": layer,
                       "progressDetail": {"current": current * 1 << 20, "total": total * 1 << 20}}
            yield {"status": "Pull complete", "id": layer}
        self._client.present_images.add(name)
        yield {"status": f"Status: Downloaded newer image for {name}"}


class FakeContainer:
    _ids = itertools.count(1)

    def __init__(self, client: FakeDockerClient, image: str, command: Sequence[str], kwargs: dict[str, Any]) -> None:
        self.client = client
        self.image = image
        self.command = list(command)
        self.kwargs = kwargs
        self.id = f"fake{next(self._ids):012d}"
        self.name = str(kwargs.get("name") or self.id)
        self.status = "created"
        self.exit_code: int | None = None
        self.oom_killed = False
        self._lines: list[str] = []
        self._stopped = threading.Event()
        self._hanging = False

    @property
    def attrs(self) -> dict[str, Any]:
        return {"Id": self.id, "State": {"Status": self.status, "ExitCode": self.exit_code,
                                         "OOMKilled": self.oom_killed}}

    def reload(self) -> None:
        return None

    def start(self) -> None:
        if self.status != "created":
            raise _errors().APIError(f"container {self.id} is already started")
        self.status = "running"
        outcome = self.client.execute(self)
        if outcome is None:  # a hang: runs until stopped
            self._hanging = True
            self._lines = ["Starting Visual ChangeNet... (this job will hang)"]
            return
        if isinstance(outcome, Delayed):  # runs on a timer thread, as a real container runs without deft
            self._hanging = True
            self._lines = [f"started; this job takes {outcome.seconds:g}s (DEFT_FAKE_FAULT slow)"]
            timer = threading.Timer(outcome.seconds, self._run_late, (outcome,))
            timer.daemon = True
            timer.start()
            return
        self._finish(outcome)

    def _run_late(self, delayed: Delayed) -> None:
        if self._stopped.is_set():
            return
        result = delayed.then()
        if not self._stopped.is_set():
            result.lines[:0] = self._lines
            self._hanging = False
            self._finish(result)

    def _finish(self, outcome: fake_tao.Execution) -> None:
        self._lines = list(outcome.lines)
        self.exit_code = outcome.exit_code
        self.oom_killed = outcome.oom_killed
        self.status = "exited"
        self._stopped.set()

    def wait(self, timeout: float | None = None, **_: Any) -> dict[str, Any]:
        if not self._stopped.wait(timeout):
            import requests

            raise requests.exceptions.ReadTimeout(f"UnixHTTPConnectionPool: Read timed out. (read timeout={timeout})")
        return {"StatusCode": self.exit_code, "Error": None}

    def logs(self, stream: bool = False, follow: bool = False, **_: Any) -> Any:
        if not stream:
            return "".join(line + "\n" for line in self._lines).encode()
        return self._stream(follow)

    def _stream(self, follow: bool) -> Iterator[bytes]:
        sent = 0
        while True:
            while sent < len(self._lines):
                yield (self._lines[sent] + "\n").encode()
                sent += 1
            if not follow or self._stopped.is_set():
                if sent >= len(self._lines):
                    return
                continue
            self._stopped.wait(0.05)

    def stop(self, timeout: int = 10, **_: Any) -> None:
        if self.status == "running":
            self.exit_code = 143 if self._hanging else (self.exit_code or 0)
            self.status = "exited"
            self._stopped.set()

    def kill(self, signal: str | int = "SIGKILL") -> None:
        if self.status == "running":
            self.exit_code = 137
            self.status = "exited"
            self._stopped.set()

    def remove(self, force: bool = False, **_: Any) -> None:
        if self.status == "running" and not force:
            raise _errors().APIError(f"cannot remove running container {self.id}")
        self.stop()
        self.client.containers.forget(self)


class FakeContainers:
    def __init__(self, client: FakeDockerClient) -> None:
        self._client = client
        self._all: dict[str, FakeContainer] = {}

    def create(self, image: str, command: str | Sequence[str] | None = None, **kwargs: Any) -> FakeContainer:
        self._client.images.get(image)
        argv = shlex.split(command) if isinstance(command, str) else list(command or [])
        container = FakeContainer(self._client, image, argv, kwargs)
        self._all[container.id] = container
        self._client.calls.append(("containers.create", {"image": image, "command": argv, **_public(kwargs)}))
        return container

    def run(self, image: str, command: str | Sequence[str] | None = None, detach: bool = False,
            remove: bool = False, **kwargs: Any) -> Any:
        container = self.create(image, command, **kwargs)
        container.start()
        if detach:
            return container
        container.wait()
        output = container.logs()
        if remove:
            container.remove(force=True)
        if container.exit_code:
            raise _errors().ContainerError(container, container.exit_code, command, image, output)
        return output

    def get(self, container_id: str) -> FakeContainer:
        """By id or by name, as docker-py's `containers.get`."""
        for container in self._all.values():
            if container_id in (container.id, container.name):
                return container
        raise _errors().NotFound(f"No such container: {container_id}")

    def list(self, all: bool = False, filters: Mapping[str, Any] | None = None, **_: Any) -> list[FakeContainer]:
        """Like docker-py: `filters={"label": ["k=v", ...]}` keeps containers carrying every label."""
        wanted = (filters or {}).get("label") or []
        wanted = [wanted] if isinstance(wanted, str) else list(wanted)

        def labelled(c: FakeContainer) -> bool:  # `all` is docker-py's parameter name here, not the builtin
            have = c.kwargs.get("labels") or {}
            for key, sep, value in (w.partition("=") for w in wanted):
                if (have.get(key) != value) if sep else key not in have:
                    return False
            return True

        return [c for c in self._all.values() if (all or c.status == "running") and labelled(c)]

    def forget(self, container: FakeContainer) -> None:
        self._all.pop(container.id, None)


def _public(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Call record for tests: environment values are dropped (they may be secrets)."""
    out = dict(kwargs)
    if "environment" in out:
        out["environment"] = sorted((out["environment"] or {}).keys())
    return out


class FakeDockerClient:
    """`docker.DockerClient` look-alike. `state_dir` holds once-fault markers (survives a new process)."""

    def __init__(self, *, state_dir: Path | None = None, faults: str | None = None,
                 images_present: bool | None = None, gpus: str | None = None) -> None:
        self.state_dir = Path(state_dir) if state_dir else None
        self._faults_text = faults
        self._gpus = gpus
        present = images_present if images_present is not None else os.environ.get(IMAGES_ENV) != "absent"
        self._all_present = present
        self.present_images: set[str] = _AllImages() if present else set()
        self.containers = FakeContainers(self)
        self.images = FakeImages(self)
        self.api = FakeAPI(self)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.logins: list[tuple[str, str]] = []  # (registry, username); never the password

    # -- client surface
    def ping(self) -> bool:
        return True

    def version(self) -> dict[str, str]:
        return {"Version": "fake", "ApiVersion": "1.45"}

    def login(self, username: str, password: str | None = None, registry: str | None = None,
              **_: Any) -> dict[str, str]:
        if not password:
            raise _errors().APIError("login attempt failed: unauthorized: authentication required")
        self.logins.append((registry or "docker.io", username))
        return {"Status": "Login Succeeded"}

    def close(self) -> None:
        return None

    # -- faults
    @property
    def faults(self) -> tuple[Fault, ...]:
        return parse_faults(self._faults_text if self._faults_text is not None else os.environ.get(FAULT_ENV))

    def fault_for(self, task: str, *, consume: bool = True) -> Fault | None:
        return pick_fault(self.faults, task, self._marker_dir(), consume=consume)

    def _marker_dir(self) -> Path:
        if self.state_dir is not None:
            return self.state_dir
        if os.environ.get(STATE_ENV):
            return Path(os.environ[STATE_ENV])
        import tempfile

        return Path(tempfile.gettempdir()) / f"deft-fake-docker-{os.getuid() if hasattr(os, 'getuid') else 0}"

    # -- execution
    def execute(self, container: FakeContainer) -> fake_tao.Execution | Delayed | None:
        """Run the container's command; None = it hangs until stopped."""
        argv = container.command
        program = argv[0] if argv else ""
        if program == "visual_changenet":
            return self._run_changenet(container)
        if program in ("embedding", "tmm"):
            return self._run_data_services(container)
        return _run_utility(argv, self._gpus or os.environ.get(GPUS_ENV) or DEFAULT_GPUS)

    def _check_mounts(self, container: FakeContainer, paths: Sequence[str]) -> str | None:
        binds = [os.path.normpath(str(h)) for h in (container.kwargs.get("volumes") or {})]
        for path in paths:
            p = os.path.normpath(path)
            if not any(os.path.commonpath([b, p]) == b for b in binds):
                return f"FileNotFoundError: [Errno 2] No such file or directory: '{path}' (not mounted)"
        return None

    def _run_changenet(self, container: FakeContainer) -> fake_tao.Execution | Delayed | None:
        out = fake_tao.Execution()
        argv = container.command
        fault = self.fault_for(argv[1] if len(argv) > 1 else "")

        def mounted(run: fake_tao.ChangeNetRun) -> None:
            missing = self._check_mounts(container, [str(run.results_dir)])
            if missing:
                raise fake_tao.EntrypointError(missing)

        acted = fake_tao.run_changenet_command(argv, out, fault.kind if fault else None, check=mounted,
                                               image=container.image)

        def rerun(kind: str | None) -> fake_tao.Execution:
            late = fake_tao.Execution()
            fake_tao.run_changenet_command(argv, late, kind, check=mounted, image=container.image)
            return late

        return _pretend(acted, out, rerun)

    def _run_data_services(self, container: FakeContainer) -> fake_tao.Execution | Delayed | None:
        from deft_aoi.runners.tao.rules import mining_engine_rule

        out = fake_tao.Execution()
        argv = container.command
        if mining_engine_rule("data_services", container.image).failed:
            # images before the first release with these entry points have no such executable
            out.say(f'exec: "{argv[0]}": executable file not found in $PATH')
            out.exit_code = 127
            return out
        if container.kwargs.get("user"):
            out.say("KeyError: 'getpwuid(): uid not found'")
            out.exit_code = 1
            return out
        workdir = container.kwargs.get("working_dir")
        has_specs = bool(workdir and os.path.isdir(os.path.join(workdir, DS_SPEC_DIR)))
        fault = self.fault_for(argv[0]) if has_specs else None
        acted = fake_tao.run_data_services_command(argv, out, workdir, fault.kind if fault else None)

        def rerun(kind: str | None) -> fake_tao.Execution:
            late = fake_tao.Execution()
            fake_tao.run_data_services_command(argv, late, workdir, kind)
            return late

        return _pretend(acted, out, rerun)


@dataclass(frozen=True)
class Delayed:
    """A job that runs `seconds` before `then` does its work (the `slow` faults)."""

    seconds: float
    then: Callable[[], fake_tao.Execution]


def _pretend(acted: str | None, out: fake_tao.Execution,
             rerun: Callable[[str | None], fake_tao.Execution] | None = None) -> fake_tao.Execution | Delayed | None:
    """Act out a hang (None: runs until stopped), a slow job (Delayed) or an OOM kill without doing either for
    real."""
    if acted == "hang":
        return None
    if acted in ("slow", "slowfail") and rerun is not None:
        after = fake_tao.after_slow(acted)
        return Delayed(fake_tao.slow_seconds(), lambda: rerun(after))
    if acted == "oom":
        out.say("Killed")
        out.exit_code, out.oom_killed = 137, True
    return out


class _AllImages(set):  # type: ignore[type-arg]
    """Every image counts as present (the default fake daemon already has what it is asked for)."""

    def __contains__(self, item: object) -> bool:
        return True


def _run_utility(argv: Sequence[str], gpus: str) -> fake_tao.Execution:
    """The few plain commands the runner and the contract tests use."""
    out = fake_tao.Execution()
    program = argv[0] if argv else ""
    if program == "echo":
        out.say(" ".join(argv[1:]))
    elif program == "true":
        pass
    elif program == "false":
        out.exit_code = 1
    elif program == "sh" and len(argv) == 3 and argv[1] == "-c":
        words = shlex.split(argv[2])
        if len(words) == 2 and words[0] == "exit" and words[1].isdigit():
            out.exit_code = int(words[1])
        else:
            out.say(f"sh: fake shell only understands 'exit N', got {argv[2]!r}")
            out.exit_code = 2
    elif program == "chown":
        pass
    elif program == "nvidia-smi":
        count, _, mib = gpus.partition("x")
        if int(count or 0) == 0:
            out.say("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")
            out.exit_code = 9
        for _ in range(int(count or 0)):
            out.say(f"{GPU_NAME}, {int(mib)}")
    else:
        out.say(f'exec: "{program}": executable file not found in $PATH')
        out.exit_code = 127
    return out
