"""Run TAO jobs in containers through docker-py (or the in-memory fake client).

Per job: the image is pulled when missing (progress bar; `docker login nvcr.io` as `$oauthtoken` with
NGC_API_KEY from the workspace `.env`), the container runs with GPUs as device requests, the job's `shm_size`
(8g, not `--ipc=host`), `user=uid:gid`, the workspace mounted at the same path inside and out, and `.env`
secrets as container environment only. The command line is the first line of the job's log file; the
container's output is streamed into it (every line redacted) with a one-line live tail on the terminal. Each
job is a handle (runners/jobs.py): the container starts detached, its id is recorded in the stage record before
deft waits, and a resumed deft re-attaches to it by its labels (run, iteration, stage, attempt, step) — so a
container outlives a killed deft. A timeout (counted from the container's start) stops the container and fails
the stage; Ctrl-C stops and removes it; it is removed once collected. Data Services can exit 0 after
failing, so a log line `Execution status: FAIL` turns into exit code 1; it also runs as root, so the runner
hands the job's output directory (and `Job.writes`) back to the calling user afterwards. A stage that is redone
first removes what an earlier attempt left (`remove_orphans`). `DEFT_DOCKER_GPUS` / `DEFT_DOCKER_MEMORY`
(factory) override GPU requests and cap memory; an engine without an NVIDIA runtime is named as such (install
nvidia-container-toolkit), not as an API error.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from deft_aoi.checks import CheckResult, failed, passed, skipped, warned
from deft_aoi.errors import DeftError, Interrupted, StageFailed
from deft_aoi.runners.base import (
    GPU_CHECK,
    LABEL_ATTEMPT,
    LABEL_ITERATION,
    LABEL_JOB,
    LABEL_RUN,
    LABEL_STAGE,
    Job,
    JobResult,
)
from deft_aoi.runners.fake.docker_client import passthrough_env
from deft_aoi.runners.gpus import GpuPlan, GpuRequest, shown
from deft_aoi.runners.jobs import (
    DOCKER_CAPABILITIES,
    LABEL_STEP,
    LABEL_SUBMITTED,
    JobHandle,
    JobJournal,
    JobStatus,
    StepCounter,
    remaining_timeout,
    run_durable,
)
from deft_aoi.secrets import credential, redact, remember_secret_values

if TYPE_CHECKING:
    from deft_aoi.runners.tao.changenet_spec import ChangeNetSpec
    from deft_aoi.workspace.layout import WorkspaceLayout

NGC_REGISTRY = "nvcr.io"
NGC_USERNAME = "$oauthtoken"
DS_FAIL_MARK = "Execution status: FAIL"
_TAIL_WIDTH = 110
LABEL_LOG = "deft-aoi.log"  # where the job's log goes: a re-attaching deft streams into the same file


ENGINE_HINT = ("start dockerd (`sudo systemctl start docker`), set DOCKER_HOST to where it listens, "
               "or use --backend local")
NVIDIA_HINT = ("install nvidia-container-toolkit on the docker host (`nvidia-ctk runtime configure --runtime=docker`, "
               "then restart dockerd), or use --backend local")
_NO_GPU_RUNTIME = re.compile(
    r"(?i)could not select device driver|unknown (or invalid )?runtime (name|specified):? nvidia|nvidia-container-cli")


def engine_address() -> str:
    """Where docker-py looks for the engine: DOCKER_HOST when set, else the default socket."""
    host = os.environ.get("DOCKER_HOST")
    return f"DOCKER_HOST={host}" if host else "unix:///var/run/docker.sock (DOCKER_HOST is not set)"


def no_gpu_runtime(message: str) -> bool:
    """True when the engine refused a GPU request because it has no NVIDIA runtime."""
    return bool(_NO_GPU_RUNTIME.search(message))


def gpu_device_requests(gpus: int | str | None) -> list[Any]:
    """docker-py DeviceRequests for `all`, a count, or a comma-separated id list; [] for none."""
    from docker.types import DeviceRequest

    if gpus is None or gpus == 0 or gpus == "0" or gpus == "":
        return []
    if gpus == "all":
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if isinstance(gpus, int) or str(gpus).isdigit():
        return [DeviceRequest(count=int(gpus), capabilities=[["gpu"]])]
    return [DeviceRequest(device_ids=[g.strip() for g in str(gpus).split(",") if g.strip()],
                          capabilities=[["gpu"]])]


def max_batch_for(memory_mib: int) -> int:
    """Largest safe batch_size per GPU: 16 on a 48 GB card, 8 on a 24 GB card (3 GB per sample)."""
    return max(1, round(memory_mib / 1024) // 3)


def command_line(argv: tuple[str, ...] | list[str]) -> str:
    return redact(shlex.join(list(argv)))


class _LiveTail:
    """One status line on stderr showing the newest log line; silent when not on a terminal."""

    def __init__(self, title: str, *, enabled: bool | None = None) -> None:
        from deft_aoi.console import err_console, interactive

        self._title = title
        show = interactive() if enabled is None else enabled
        self._status = err_console().status(title) if show else None

    def __enter__(self) -> _LiveTail:
        if self._status is not None:
            self._status.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(None, None, None)

    def update(self, line: str) -> None:
        if self._status is not None and line.strip():
            from rich.markup import escape

            self._status.update(f"{self._title} · {escape(line.strip()[:_TAIL_WIDTH])}")


def _wait_interruptibly(container: Any, timeout_s: float | None) -> dict[str, Any]:
    """`container.wait()` on a helper thread, the main thread joining it in short slices.

    An untimed blocking call in the main thread can miss a Ctrl-C that lands just before it blocks (CPython runs
    signal handlers between bytecodes), and a training job may block for hours; a timed join wakes up and sees it.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["status"] = container.wait(timeout=timeout_s)
        except BaseException as exc:  # handed back to the main thread below
            box["error"] = exc

    waiter = threading.Thread(target=target, name="deft-container-wait", daemon=True)
    waiter.start()
    while waiter.is_alive():
        waiter.join(0.2)
    if "error" in box:
        raise box["error"]
    return box.get("status") or {}


def _join_quietly(thread: threading.Thread | None, timeout: float) -> None:
    """Join a helper thread; Ctrl-C can leave `Thread.start` half-done, when joining it raises RuntimeError."""
    if thread is not None:
        with contextlib.suppress(RuntimeError):
            thread.join(timeout)


class DockerRunner:
    """Runner over a docker-py client (`docker.from_env()`) or `FakeDockerClient`.

    `client` may be a zero-argument factory, so a missing daemon fails where it is first needed (and is
    reported by preflight) rather than at construction.
    """

    def __init__(self, client: Any | Callable[[], Any], workspace: WorkspaceLayout, *, name: str = "docker",
                 stop_timeout_s: int = 10, gpus: int | str | None = None, mem_limit: str | None = None) -> None:
        """`gpus` overrides every job's GPU request (0: none, for an engine without GPUs); `mem_limit` caps
        each container's memory (docker's `--memory`, swap included)."""
        self.name = name
        self._gpus = gpus
        self._mem_limit = mem_limit
        self.workspace = workspace
        self._client_or_factory = client
        self._client: Any | None = None if callable(client) and not hasattr(client, "containers") else client
        self._current: Any | None = None
        self._stop_timeout_s = stop_timeout_s
        self._lock = threading.Lock()
        self._tail = _LiveTail("", enabled=False)
        self._containers: dict[str, Any] = {}  # job id → container object, for the jobs this deft handles
        self._steps = StepCounter()
        self.journal: JobJournal | None = None
        self._plan: GpuPlan | None = None
        self._gpus_seen: dict[str | None, list[tuple[str, int]] | str | None] = {}  # nvidia-smi answers, by image

    capabilities = DOCKER_CAPABILITIES

    # ------------------------------------------------------------ client
    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                self._client = self._client_or_factory()
            except Exception as exc:  # docker.errors.DockerException and socket errors alike
                raise StageFailed(f"cannot reach the Docker Engine at {engine_address()}: {redact(str(exc))}",
                                  hint=ENGINE_HINT) from exc
        return self._client

    # ------------------------------------------------------------ images
    def _auth(self, image: str) -> dict[str, str] | None:
        if not image.startswith(NGC_REGISTRY + "/"):
            return None
        key = credential("NGC_API_KEY", self.workspace.env_file)
        if not key:
            return None
        try:
            self.client.login(username=NGC_USERNAME, password=key, registry=NGC_REGISTRY)
        except Exception as exc:
            raise StageFailed(f"docker login to {NGC_REGISTRY} failed: {redact(str(exc))}",
                              hint=f"check NGC_API_KEY in {self.workspace.env_file}") from exc
        return {"username": NGC_USERNAME, "password": key}

    def image_present(self, image: str) -> bool:
        import docker.errors

        try:
            self.client.images.get(image)
            return True
        except docker.errors.ImageNotFound:
            return False

    def ensure_image(self, image: str) -> None:
        if not self.image_present(image):
            self.pull(image)

    def pull(self, image: str) -> None:
        """Pull with a progress bar over the layers' bytes."""
        import docker.errors
        from docker.utils import parse_repository_tag

        from deft_aoi.console import progress, say

        repo, tag = parse_repository_tag(image)
        auth = self._auth(image)
        say(f"pulling {image} (first use; this can take several minutes)")
        layers: dict[str, tuple[int, int]] = {}
        try:
            with progress(transient=True) as bar:
                task = bar.add_task(f"pull {image.rsplit('/', 1)[-1]}", total=None, rate="")
                for event in self.client.api.pull(repo, tag=tag or "latest", stream=True, decode=True,
                                                  auth_config=auth):
                    if "error" in event:
                        raise docker.errors.APIError(str(event.get("error")))
                    detail = event.get("progressDetail") or {}
                    if event.get("id") and detail.get("total"):
                        layers[str(event["id"])] = (int(detail.get("current", 0)), int(detail["total"]))
                        done = sum(c for c, _ in layers.values())
                        total = sum(t for _, t in layers.values())
                        bar.update(task, completed=done, total=total, rate=f"{done / 2**20:.0f} MiB")
        except docker.errors.APIError as exc:
            hint = (f"set NGC_API_KEY in {self.workspace.env_file} (an NGC API key) or `docker pull` it yourself"
                    if image.startswith(NGC_REGISTRY) else "check the image name in versions.yaml")
            raise StageFailed(f"could not pull {image}: {redact(str(exc))}", hint=hint) from exc
        if not self.image_present(image):
            raise StageFailed(f"pulled {image} but docker does not list it afterwards")

    # ------------------------------------------------------------ run: jobs are handles (runners/jobs.py)
    def run(self, job: Job) -> JobResult:
        from deft_aoi.console import say

        return run_durable(self, job, step=self._steps.next(job.labels), journal=self.journal, say=say)

    def submit(self, job: Job, step: int) -> JobHandle:
        """Start the job's container detached and return its handle (the caller records it, then waits)."""
        import docker.errors

        remember_secret_values(job.env)
        self.ensure_image(job.image)
        job.log_file.parent.mkdir(parents=True, exist_ok=True)
        job.log_file.write_text(f"$ {command_line(job.argv)}\n", encoding="utf-8")  # wait() rewrites it whole
        submitted = time.time()
        kwargs = self._container_kwargs(job)
        kwargs["labels"].update({LABEL_STEP: str(step), LABEL_SUBMITTED: f"{submitted:.3f}"})
        try:
            container = self.client.containers.run(job.image, **kwargs)
        except docker.errors.APIError as exc:
            # docker-py creates, then starts: a refused start leaves a created container behind.
            leftover = self._find(kwargs["name"])
            if leftover is not None:
                self._remove(leftover)
            message = redact(str(exc))
            with open(job.log_file, "a", encoding="utf-8") as log:
                log.write(f"[deft] docker could not start the container: {message}\n")
            if no_gpu_runtime(message):
                raise StageFailed(f"{job.name}: the Docker Engine has no NVIDIA runtime for this GPU request; "
                                  f"{NVIDIA_HINT}. Log: {job.log_file}") from None
            raise StageFailed(f"{job.name}: docker could not start the container: {message}. "
                              f"Log: {job.log_file}") from exc
        except KeyboardInterrupt as exc:
            # Ctrl-C may land between docker creating the container and run() returning it: find it by name.
            leftover = self._find(kwargs["name"])
            if leftover is not None:
                self._halt(leftover)
                self._remove(leftover)
            with open(job.log_file, "a", encoding="utf-8") as log:
                log.write("[deft] interrupted (Ctrl-C) while the container started: container stopped and removed\n")
            raise Interrupted(f"{job.name}: interrupted; the container was stopped and removed. "
                              "Resume the run to continue from this stage.") from exc
        self._containers[str(container.id)] = container
        return self._handle(container, job.name, job.log_file, kwargs["labels"])

    def _handle(self, container: Any, name: str, log_file: Any, labels: Mapping[str, str]) -> JobHandle:
        return JobHandle(backend="docker", job_id=str(container.id), name=name,
                         run_id=labels.get(LABEL_RUN, ""), iteration=labels.get(LABEL_ITERATION, ""),
                         stage=labels.get(LABEL_STAGE, ""), step=int(labels.get(LABEL_STEP, "0") or 0),
                         submitted_at=float(labels.get(LABEL_SUBMITTED) or time.time()), log_path=str(log_file))

    def find(self, labels: Mapping[str, str], step: int) -> list[JobHandle]:
        """Containers (any state) an earlier deft left for this stage and step, oldest first."""
        wanted = {**{k: v for k, v in labels.items() if k in (LABEL_RUN, LABEL_ITERATION, LABEL_STAGE, LABEL_ATTEMPT)},
                  LABEL_STEP: str(step)}
        found = self.client.containers.list(all=True, filters={"label": [f"{k}={v}" for k, v in wanted.items()]})
        handles = []
        for container in found:
            have = dict(_labels_of(container))
            self._containers[str(container.id)] = container
            handles.append(self._handle(container, have.get(LABEL_JOB, "?"), have.get(LABEL_LOG, ""), have))
        return sorted(handles, key=lambda h: h.submitted_at)

    def _container(self, handle: JobHandle) -> Any | None:
        return self._containers.get(handle.job_id) or self._find(handle.job_id)

    def poll(self, handle: JobHandle) -> JobStatus:
        container = self._container(handle)
        if container is None:
            return JobStatus(phase="gone", state="removed")
        with contextlib.suppress(Exception):
            container.reload()
        state = (getattr(container, "attrs", None) or {}).get("State", {}) or {}
        word = str(state.get("Status") or getattr(container, "status", "") or "")
        if word in ("created", "running", "restarting", "paused"):
            return JobStatus(phase="pending" if word == "created" else "running", state=word)
        code = state.get("ExitCode")
        return JobStatus(phase="exited", exit_code=None if code is None else int(code),
                         state="OOMKilled" if state.get("OOMKilled") else word)

    def cancel(self, handle: JobHandle) -> None:
        container = self._container(handle)
        if container is not None:
            self._halt(container)
            self._remove(container)

    def wait(self, handle: JobHandle, job: Job, *, reattached: bool) -> JobResult:
        """Stream the container's whole log (from its start, so a re-attached job's log equals an undisturbed
        one's) into the job's log file, wait with what is left of its timeout, collect, remove."""
        container = self._container(handle)
        if container is None:
            raise StageFailed(f"{job.name}: container {handle.job_id[:12]} is gone (removed outside deft?); "
                              "resume to run the stage again", hint="`deft resume` submits the job anew")
        job.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(job.log_file, "w", encoding="utf-8") as log:
            log.write(f"$ {command_line(job.argv)}\n")
            if reattached:
                log.write(f"[deft] re-attached to container {handle.job_id[:12]} (submitted "
                          f"{handle.elapsed():.0f}s ago by an earlier deft)\n")
            log.flush()
            exit_code = self._wait_container(container, job, handle, log)
        if exit_code == 0 and DS_FAIL_MARK in job.log_file.read_text(encoding="utf-8", errors="replace"):
            with open(job.log_file, "a", encoding="utf-8") as log:
                log.write(f"[deft] the container exited 0 but logged '{DS_FAIL_MARK}': treated as exit 1\n")
            exit_code = 1
        if job.user is None:
            self._restore_ownership(job)
        return JobResult(exit_code=exit_code, duration_s=handle.elapsed(), log_path=job.log_file)

    def _container_kwargs(self, job: Job) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "command": list(job.argv),
            "detach": True,
            "volumes": {str(m.host): {"bind": str(m.container), "mode": "ro" if m.read_only else "rw"}
                        for m in job.mounts},
            "working_dir": str(job.workdir),
            # DEFT_FAKE_* first, so a job's own env wins; TAO's images ignore them (see fake/docker_client.py).
            "environment": {**passthrough_env(), **dict(job.env)},
            "device_requests": gpu_device_requests(job.gpus if self._gpus is None else self._gpus),
            "name": f"deft-{re.sub(r'[^a-z0-9]+', '-', job.name.lower()).strip('-')}-{uuid.uuid4().hex[:8]}",
            "labels": {LABEL_JOB: job.name, LABEL_LOG: str(job.log_file), **dict(job.labels)},
        }
        if self._mem_limit:
            kwargs["mem_limit"] = kwargs["memswap_limit"] = self._mem_limit
        if job.user:
            kwargs["user"] = job.user
        if job.ipc_host:
            kwargs["ipc_mode"] = "host"
        if job.shm_size:
            kwargs["shm_size"] = job.shm_size
        return kwargs

    def _wait_container(self, container: Any, job: Job, handle: JobHandle, log: Any) -> int:
        """Wait and collect. The container is removed once collected, timed out or cancelled by Ctrl-C; any
        other way out (deft killed, the daemon unreachable) leaves it for a resumed deft to re-attach."""
        import requests

        follower: threading.Thread | None = None
        remaining = remaining_timeout(job, handle)
        try:
            with self._lock:
                self._current = container
            follower = threading.Thread(target=self._follow, args=(container, log, job.name), daemon=True)
            with _LiveTail(job.name) as tail:
                self._tail = tail
                follower.start()
                try:
                    if remaining is not None and remaining <= 0:
                        raise requests.exceptions.ReadTimeout("the job's time ran out while deft was away")
                    status = _wait_interruptibly(container, remaining)
                except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
                    timed_out = job.timeout_s is not None and (isinstance(exc, requests.exceptions.ReadTimeout)
                                                              or handle.elapsed() >= 0.9 * job.timeout_s)
                    if not timed_out:  # the job may still run: a resumed deft re-attaches to it
                        raise StageFailed(f"{job.name}: lost the connection to the docker daemon: "
                                          f"{redact(str(exc))}; container {handle.job_id[:12]} was left as is",
                                          hint="`deft resume` re-attaches to it once the engine answers") from exc
                    self._halt(container)
                    self._remove(container)
                    _join_quietly(follower, 10)
                    assert job.timeout_s is not None
                    log.write(f"[deft] timed out after {job.timeout_s:g}s (counted from the job's start): "
                              "container stopped\n")
                    raise StageFailed(
                        f"{job.name}: timed out after {job.timeout_s:g}s; the container was stopped (the time "
                        f"counts from the job's start, across deft restarts). Log: {job.log_file}",
                        hint="raise the stage timeout, or check the log tail for a stuck step",
                    ) from exc
                _join_quietly(follower, 30)
            oom_killed = False
            with contextlib.suppress(Exception):  # read before the container is removed below
                container.reload()
                oom_killed = bool(container.attrs.get("State", {}).get("OOMKilled"))
        except KeyboardInterrupt as exc:
            self._halt(container)
            self._remove(container)
            _join_quietly(follower, 10)
            log.write("[deft] interrupted (Ctrl-C): container stopped and removed\n")
            raise Interrupted(f"{job.name}: interrupted; the container was stopped and removed. "
                              "Resume the run to continue from this stage.") from exc
        finally:
            with self._lock:
                self._current = None
            _join_quietly(follower, 5)  # it writes to `log`, which the caller closes next
        self._remove(container)  # collected
        self._containers.pop(handle.job_id, None)
        code = int(status.get("StatusCode", 1))
        if oom_killed:
            log.write("[deft] the engine reports OOMKilled: the container hit its memory limit\n")
            code = 137
        return code

    def _find(self, name: str) -> Any | None:
        with contextlib.suppress(Exception):
            return self.client.containers.get(name)
        return None

    def _follow(self, container: Any, log: Any, title: str) -> None:
        """Stream container output into the log (redacted, line by line) and the live tail."""
        buffer = ""
        try:
            for chunk in container.logs(stream=True, follow=True):
                buffer += chunk.decode("utf-8", errors="replace") if isinstance(chunk, bytes) else str(chunk)
                *lines, buffer = re.split(r"\r\n|\n|\r", buffer)
                for line in lines:
                    clean = redact(line)
                    log.write(clean + "\n")
                    self._tail.update(clean)
                log.flush()
        except Exception as exc:  # the daemon went away mid-stream: keep what we have
            buffer += f"\n[deft] log stream ended: {redact(str(exc))}"
        # After a Ctrl-C the runner may already have closed the log; what is left is then dropped.
        with contextlib.suppress(ValueError):
            if buffer:
                log.write(redact(buffer) + "\n")
            log.flush()

    def _halt(self, container: Any) -> None:
        with contextlib.suppress(Exception):
            container.stop(timeout=self._stop_timeout_s)

    def _remove(self, container: Any) -> None:
        with contextlib.suppress(Exception):
            container.remove(force=True)

    def _restore_ownership(self, job: Job) -> None:
        """A root container leaves root-owned outputs; chown the job's own directory, and the files it names
        as outputs elsewhere (`Job.writes`), back to us."""
        if not hasattr(os, "getuid") or os.getuid() == 0:
            return
        roots = [os.path.normpath(str(m.host)) for m in job.mounts]
        targets = []
        for written in (job.workdir, *job.writes):
            path = os.path.normpath(str(written))
            # never chown a whole mount (the workspace); only what the job itself wrote
            if path not in roots and any(os.path.commonpath([r, path]) == r for r in roots) and os.path.exists(path):
                targets.append(path)
        if not targets:
            return
        with contextlib.suppress(Exception):
            self.client.containers.run(
                job.image, command=["chown", "-R", f"{os.getuid()}:{os.getgid()}", *targets], remove=True,
                volumes={str(m.host): {"bind": str(m.container), "mode": "rw"} for m in job.mounts},
                labels={LABEL_JOB: f"{job.name} (chown)", **dict(job.labels)},
            )

    def stop(self) -> None:
        with self._lock:
            container = self._current
        if container is not None:
            self._halt(container)
            self._remove(container)

    def remove_orphans(self, labels: Mapping[str, str]) -> list[str]:
        """Stop and remove every container carrying all of `labels` (what a killed deft left running).
        Best effort: an unreachable engine is reported by the stage that needs it, not here."""
        if not labels:
            return []
        try:
            found = self.client.containers.list(all=True, filters={"label": [f"{k}={v}" for k, v in labels.items()]})
        except Exception:
            return []
        removed = []
        for container in found:
            self._halt(container)
            self._remove(container)
            removed.append(str(getattr(container, "name", container)))
        return removed

    # ------------------------------------------------------------ GPUs
    def gpu_plan(self, image: str) -> GpuPlan:
        """What each container is given (--gpus / DEFT_DOCKER_GPUS, else all) and the count TAO is told; `all`
        is counted with nvidia-smi (in `image` when present, else on the host), once per runner."""
        if self._plan is None:
            self._plan = self._make_plan(image)
        return self._plan

    def _make_plan(self, image: str) -> GpuPlan:
        request = GpuRequest.parse(self._gpus if self._gpus is not None else "all")
        count: int | None
        if request.ids:
            count, given = len(request.ids), f"device ids {','.join(request.ids)} per container"
        elif not request.all:
            count = request.count
            given = f"{count} GPU(s) per container" if count else "none (a CPU stand-in image)"
        else:
            try:
                found = self._query_gpus(image if self.image_present(image) else None)
            except DeftError:  # an unreachable engine: the daemon check names it
                found = None
            count = len(found) if isinstance(found, list) and found else None
            given = (f"all {count} GPU(s) of the engine per container" if count else
                     "all of the engine's, per container (uncounted: no nvidia-smi answered)")
        if count and self.name != "docker":  # the fake client invents its GPUs (DEFT_FAKE_GPUS)
            given += " (simulated)"
        return GpuPlan(count, str(request), shown(given, count))

    # ------------------------------------------------------------ preflight
    def preflight(self, workspace: WorkspaceLayout, spec: ChangeNetSpec, batch_size: int, *,
                  mining_engine: str | None = None) -> list[CheckResult]:
        """Spec schema and TAO's run-time rules (each with its source), daemon, images, credentials, GPU
        count/memory vs batch_size. Never shows secrets."""
        from deft_aoi.runners.tao.checks import tao_rule_checks
        from deft_aoi.runners.tao.versions import load_versions

        try:
            versions = load_versions(workspace)
        except DeftError as exc:
            return [failed("container images", exc.render())]
        plan = self.gpu_plan(versions.pyt)
        results: list[CheckResult] = [passed(GPU_CHECK, plan.shown),
                                      *self._check_spec(workspace, spec, versions.pyt, batch_size, plan)]
        # Only a real container loads a backbone file; the fake client stands in for TAO without one.
        results.extend(tao_rule_checks(workspace, spec, pyt_image=versions.pyt, ds_image=versions.data_services,
                                       batch_size=batch_size, mining_engine=mining_engine,
                                       real_tao=self.name == "docker", gpu_plan=plan))
        try:
            self.client.ping()
        except Exception as exc:
            detail = exc.message if isinstance(exc, DeftError) else (
                f"cannot reach the Docker Engine at {engine_address()}: {redact(str(exc))}")
            results.append(failed("docker daemon", f"{detail}; {ENGINE_HINT}"))
            return results
        version = "version unknown"
        with contextlib.suppress(Exception):  # the version is a courtesy; the ping already answered
            version = f"Docker Engine {self.client.version().get('Version', '?')}"
        results.append(passed("docker daemon", f"reachable ({self.name}; {version})"))
        key = credential("NGC_API_KEY", workspace.env_file)
        present = {}
        for label, image in (("Visual ChangeNet image", versions.pyt), ("Data Services image", versions.data_services)):
            present[image] = self.image_present(image)
            results.append(self._check_image(label, image, present[image], key))
        if key:
            results.append(passed("credentials", f"NGC_API_KEY present (environment or {workspace.env_file.name})"))
        elif all(present.values()):
            results.append(warned("credentials", "NGC_API_KEY not set; fine while the images stay present locally"))
        else:
            results.append(failed("credentials",
                                  f"NGC_API_KEY not set in {workspace.env_file} and an image must be pulled"))
        if not credential("HF_TOKEN", workspace.env_file):
            results.append(warned("HF_TOKEN", "not set; needed only for --mining-engine data_services (SigLIP)"))
        results.append(self._check_gpu(versions.pyt, present[versions.pyt], batch_size))
        return results

    def _check_spec(self, workspace: WorkspaceLayout, spec: ChangeNetSpec, image: str,
                    batch_size: int, plan: GpuPlan) -> list[CheckResult]:
        from deft_aoi.runners.tao.checks import spec_schema_check
        from deft_aoi.runners.tao.schema import snapshot_for_image

        checks = [spec_schema_check(workspace, spec, image=image, batch_size=batch_size, gpu_plan=plan)]
        _, note = snapshot_for_image(image)
        if note:
            checks.append(warned("TAO release", note))
        return checks

    def _check_image(self, label: str, image: str, present: bool, key: str | None) -> CheckResult:
        if present:
            return passed(label, f"{image} present locally")
        try:
            auth = {"username": NGC_USERNAME, "password": key} if key and image.startswith(NGC_REGISTRY) else None
            self.client.images.get_registry_data(image, auth_config=auth)
        except Exception as exc:
            how = (f"run `docker login {NGC_REGISTRY}` (username {NGC_USERNAME}, password: your NGC API key) "
                   f"or put NGC_API_KEY in {self.workspace.env_file.name}, then `docker pull {image}`"
                   if image.startswith(NGC_REGISTRY + "/") else
                   f"`docker pull {image}` or load it, or fix the name in versions.yaml")
            return failed(label, f"{image} is not present locally and cannot be pulled: {how} "
                                 f"(engine said: {redact(str(exc))})")
        return passed(label, f"{image} pullable (will be pulled on first use)")

    def _check_gpu(self, image: str, image_present: bool, batch_size: int) -> CheckResult:
        if self._gpus is not None and not gpu_device_requests(self._gpus):
            return skipped("GPU", "no GPU requested (DEFT_DOCKER_GPUS=0): jobs run on CPU, which only a "
                                  "stand-in image can do")
        gpus = self._query_gpus(image if image_present else None)
        if isinstance(gpus, str):
            return failed("GPU", gpus)
        if gpus is None:
            return warned("GPU", "not verified: the image is not pulled yet and no host nvidia-smi was found")
        if not gpus:
            return failed("GPU", "no GPU visible to docker (is the NVIDIA container toolkit installed?)")
        smallest = min(mib for _, mib in gpus)
        limit = max_batch_for(smallest)
        desc = f"{len(gpus)} × {gpus[0][0]} ({round(smallest / 1024)} GB)"
        if self.name != "docker":  # the fake client invents its GPUs (DEFT_FAKE_GPUS): never show them as real
            desc = f"no real GPU checked ({self.name} backend simulates {desc})"
        if batch_size > limit:
            return failed("GPU", f"{desc}: batch_size {batch_size} exceeds {limit} for "
                          f"{round(smallest / 1024)} GB per GPU (GPU allocation mismatch); lower batch_size")
        return passed("GPU", f"{desc}; batch_size {batch_size} ≤ {limit}")

    def _query_gpus(self, image: str | None) -> list[tuple[str, int]] | str | None:
        """GPUs as (name, MiB); a str explains an engine that cannot run GPU containers at all. Asked once per
        image (the GPU plan and the GPU check both need it; each asking starts a container)."""
        if image not in self._gpus_seen:
            self._gpus_seen[image] = self._ask_nvidia_smi(image)
        return self._gpus_seen[image]

    def _ask_nvidia_smi(self, image: str | None) -> list[tuple[str, int]] | str | None:
        query = ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]
        if image is not None:
            name = f"deft-preflight-gpu-{uuid.uuid4().hex[:8]}"
            try:
                raw = self.client.containers.run(image, command=query, remove=True, name=name,
                                                 labels={LABEL_JOB: "preflight nvidia-smi"},
                                                 device_requests=gpu_device_requests("all"))
            except Exception as exc:
                leftover = self._find(name)  # a refused start leaves the created container
                if leftover is not None:
                    self._remove(leftover)
                if no_gpu_runtime(str(exc)):
                    return f"the Docker Engine has no NVIDIA runtime for a GPU request: {NVIDIA_HINT}"
                return []
            return _parse_gpus(raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw))
        import shutil
        import subprocess

        exe = shutil.which("nvidia-smi")
        if exe is None:
            return None
        try:
            out = subprocess.run([exe, *query[1:]], capture_output=True, text=True, timeout=20, check=True).stdout
        except (subprocess.SubprocessError, OSError):
            return []
        return _parse_gpus(out)


def _labels_of(container: Any) -> Mapping[str, str]:
    """A container's labels: docker-py keeps them in attrs, the fake client in its create kwargs."""
    labels = (getattr(container, "attrs", None) or {}).get("Config", {}).get("Labels")
    if labels is None:
        labels = (getattr(container, "kwargs", None) or {}).get("labels")
    return labels or {}


def _parse_gpus(text: str) -> list[tuple[str, int]]:
    gpus = []
    for line in text.splitlines():
        name, _, mib = line.rpartition(",")
        if name and mib.strip().isdigit():
            gpus.append((name.strip(), int(mib.strip())))
    return gpus
