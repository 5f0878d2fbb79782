"""The engine: runs the stage graph (loop/graph.py) as a crash-safe state machine.

The engine knows stages only through the `Stage` protocol (loop/stage_contract.py). Each stage writes into a
scratch dir; the engine hashes its declared artefacts and commits it (loop/commit.py) only when whole. Disk is
canonical: the next step is always computed from the state on disk, so `resume` is just "run again".
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from deft_aoi import interrupts
from deft_aoi.errors import DeftError, HardStop, Interrupted, StageFailed, disk_error, write_traceback
from deft_aoi.io_utils import remove_torn_writes
from deft_aoi.loop.artefacts import declared, hash_artefacts
from deft_aoi.loop.commit import commit_stage, stage_record
from deft_aoi.loop.fixes import BETWEEN_STAGES_FIX, fix_for
from deft_aoi.loop.graph import (
    drop_unfinished_stages,
    next_step,
    stage_after,
)
from deft_aoi.loop.stage_contract import LoopServices, Stage, StageContext, StageOutcome
from deft_aoi.loop.state import Failure, RunState, StageRecord, utc_now
from deft_aoi.loop.store import StateStore
from deft_aoi.runners.base import stage_labels
from deft_aoi.runners.jobs import JobDetached, JobHandle
from deft_aoi.secrets import redact
from deft_aoi.textutil import clean_text
from deft_aoi.workspace.catalog import artefact
from deft_aoi.workspace.iterations import is_baseline, previous_iteration
from deft_aoi.workspace.stored_paths import store_text_files


def _fmt_duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _fmt_pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}%"


class StageJournal:
    """The running stage's record in deft_state.json as the runner's job journal: each handle is saved (atomic,
    durable) before deft waits on the job, so a deft killed while it runs leaves what resume re-attaches to."""

    def __init__(self, store: StateStore, state: RunState, iteration: str, stage: str, *, detach: bool) -> None:
        self._store, self._state, self._iteration, self._stage = store, state, iteration, stage
        self._detach = detach

    def _record(self) -> StageRecord:
        return self._state.iteration(self._iteration).stages[self._stage]

    def recorded(self, labels: Mapping[str, str], step: int) -> JobHandle | None:
        for data in self._record().jobs:
            if data.get("step") == step:
                return JobHandle.from_dict(data)
        return None

    def record(self, handle: JobHandle) -> None:
        rec = self._record()
        rec.jobs = [j for j in rec.jobs if j.get("step") != handle.step] + [handle.to_dict()]
        rec.jobs.sort(key=lambda j: int(j.get("step", 0)))
        self._store.save(self._state)
        if self._detach and not handle.collected:
            raise JobDetached(
                f"{self._iteration} · {self._stage}: {handle.name} runs on as {handle.backend} job "
                f"{handle.job_id[:12]}; deft left it running (--detach). `deft resume` re-attaches to it "
                "(streams its log and waits), or collects it if it finished meanwhile")


class Engine:
    def __init__(
        self,
        services: LoopServices,
        stages: Mapping[str, Stage],
        store: StateStore,
        *,
        after_iteration: Callable[[RunState], None] | None = None,
        detach: bool = False,
    ) -> None:
        self.services = services
        self.stages = stages
        self.store = store
        self.after_iteration = after_iteration
        self.detach = detach
        self._redo: set[tuple[str, str]] = set()  # stages a crash left unfinished: their containers may live on
        # Stages a killed (or detached) deft left in progress with recorded job handles: re-attached, not redone.
        self._adopt: dict[tuple[str, str], StageRecord] = {}

    # -- resume bookkeeping --------------------------------------------------------------------
    def reconcile(self, state: RunState) -> RunState:
        """Make state and log agree after a crash: unfinished stages are reset (redone from scratch) and
        every complete stage has exactly one `ok` log line."""
        self.store.repair_log()
        self._redo = {(it.name, name) for it in state.iterations.values()
                      for name, rec in it.stages.items() if rec.status != "complete"}
        # A stage still in_progress was cut short without a chance to clean up (SIGKILL, a lost session) or left
        # on purpose (--detach): its jobs may run on. Keep its record and scratch dir and re-attach to them.
        # A failed stage whose job was never collected (the daemon went away while deft waited) is re-attached too;
        # one whose job ended (failed, timed out, cancelled) is redone.
        self._adopt = {(it.name, name): rec.model_copy(deep=True) for it in state.iterations.values()
                       for name, rec in it.stages.items() if rec.jobs and (
                           rec.status == "in_progress"
                           or (rec.status == "failed" and any(j.get("exit_code") is None for j in rec.jobs)))}
        kept = {rec.output_dir for rec in self._adopt.values()}
        self.store.repair_start_record(state)
        self.store.relocate_records()  # a moved or copied workspace: its records name where it is now
        # A writer killed mid-write leaves its temp file (holding the old place's paths, say): never read, removed.
        # Not in the scratch dirs, where a re-attached job may be writing now (the rest is cleared below).
        remove_torn_writes(self.services.run.root, keep=self.services.run.scratch)
        for output_dir in drop_unfinished_stages(state):
            if output_dir not in kept:
                shutil.rmtree(self.services.run.root / output_dir, ignore_errors=True)
        self._clear_scratch({self.services.run.scratch / it / stage for it, stage in self._adopt})
        logged = self.store.ok_entries()
        for it in state.ordered_iterations():
            for name, rec in sorted(it.stages.items(), key=lambda kv: kv[1].started_at):
                if (it.name, name) not in logged:
                    self.store.append_log(iteration=it.name, stage=name, status="ok", summary=rec.summary,
                                          duration_sec=rec.duration_sec or 0.0)
        state.status = "running"
        state.failure = None
        self.store.save(state)
        return state

    def _clear_scratch(self, keep: set[Path]) -> None:
        """Remove the scratch dir except the stage dirs in `keep` (jobs re-attached there write into them)."""
        scratch = self.services.run.scratch
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
            return
        for iteration_dir in scratch.iterdir() if scratch.is_dir() else ():
            for stage_dir in iteration_dir.iterdir() if iteration_dir.is_dir() else (iteration_dir,):
                if stage_dir not in keep:
                    if stage_dir.is_dir():
                        shutil.rmtree(stage_dir, ignore_errors=True)
                    else:
                        stage_dir.unlink(missing_ok=True)

    # -- main loop --------------------------------------------------------------------------------
    def run(self, state: RunState) -> RunState:
        step: tuple[str, str] | None = None
        try:
            while (step := next_step(state)) is not None:
                iteration, stage = step
                self._run_stage(state, iteration, stage)
                if interrupts.requested():  # Ctrl-C held back while the stage was being committed
                    raise interrupts.UserInterrupt()
                # After each iteration; the loop's end (whatever ends it) is the caller's to mark (api.Loop).
                if stage == "gate" and self.after_iteration is not None:
                    self.after_iteration(state)
        except KeyboardInterrupt:  # between stages: everything committed so far stays committed
            self._stop_between_stages(state, step)
        except JobDetached as exc:  # --detach: the job runs on; its handle is in the stage record
            self.services.say(exc.message)
        return state

    def _stop_between_stages(self, state: RunState, step: tuple[str, str] | None) -> NoReturn:
        iteration, stage = step if step is not None else (None, None)
        state.status = "interrupted"
        state.failure = Failure(kind="interrupted", message="interrupted by the user (Ctrl-C) between stages",
                                stage=stage, iteration=iteration, hard_stop=False,
                                fix=BETWEEN_STAGES_FIX)
        self.store.save(state)
        where = f"{iteration} · {stage}" if step is not None else "the last committed stage"
        raise Interrupted(f"interrupted after {where}; resume with `deft resume`") from None

    def _run_stage(self, state: RunState, iteration: str, stage_name: str) -> None:
        stage = self.stages[stage_name]
        it = state.iteration(iteration)
        state.current_iteration = it.index
        ctx = StageContext(self.services, state, iteration, it.index, self.services.run.scratch, utc_now(),
                           reads=declared(stage, "reads"))
        final_rel = stage.output_dir(ctx)
        final = self.services.run.root / final_rel
        # In-place stages write where their paths must finally point (e.g. the staged synthetic pool, whose
        # CSV rows name their own directory); a redo wipes the dir first, so they stay crash-safe.
        in_place = getattr(stage, "in_place", False)
        scratch = final if in_place else self.services.run.scratch / iteration / stage_name
        adopted = self._adopt.pop((iteration, stage_name), None)
        if adopted is not None:
            # Re-attach: the stage runs again over its kept scratch dir; its runner finds the jobs by their
            # recorded handles and labels, skips those already collected, and waits for the rest.
            self._redo.discard((iteration, stage_name))
            ctx.started_at = adopted.started_at
            final_rel = stage.output_dir(ctx)
            final = self.services.run.root / final_rel
            scratch = final if in_place else scratch
            scratch.mkdir(parents=True, exist_ok=True)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            if (iteration, stage_name) in self._redo:
                self._redo.discard((iteration, stage_name))
                self._remove_orphans(iteration, stage_name)
        ctx.out = scratch
        self.services.labels = stage_labels(self.services.run.run_id, iteration, stage_name, ctx.started_at)
        it.stages[stage_name] = StageRecord(status="in_progress", started_at=ctx.started_at, output_dir=final_rel,
                                            jobs=adopted.jobs if adopted is not None else [])
        it.status = "in_progress"
        self.store.save(state)
        self.services.journal = StageJournal(self.store, state, iteration, stage_name, detach=self.detach)
        t0 = time.monotonic()
        with contextlib.ExitStack() as commit_guard:
            outcome, outputs = self._call(stage, ctx, commit_guard, final, in_place, t0)
            duration = time.monotonic() - t0
            try:
                # Where the stage found what it read (a fine-tune's start checkpoint is an earlier iteration's).
                inputs = {key: path for key, path in ctx.read_at.items() if key in ctx.reads}
                record = stage_record(
                    iteration=iteration, stage=stage_name, started_at=ctx.started_at, ended_at=utc_now(),
                    duration_sec=duration, summary=redact(outcome.summary), output_dir=final_rel,
                    workspace=str(self.services.workspace.root),  # anchors its paths if the workspace moves
                    inputs=hash_artefacts(inputs, self.services.run.root),
                    outputs=hash_artefacts(outputs, self.services.run.root, shown_at={scratch: final}),
                    updates=outcome.updates.model_dump(mode="json", exclude_unset=True),
                    run_updates=outcome.run_updates.model_dump(mode="json", exclude_unset=True),
                    closes_iteration=outcome.closes_iteration, closes_run=outcome.closes_run,
                    jobs=it.stages[stage_name].jobs,
                )
                commit_stage(self.store, state, record, staged=scratch, final=final)
            except OSError as exc:
                self._commit_refused(state, iteration, stage_name, t0, (scratch, final), exc)
            self.services.say(self.status_line(state, iteration, stage_name, duration))

    def _call(self, stage: Stage, ctx: StageContext, commit_guard: contextlib.ExitStack, final: Path,
              in_place: bool, t0: float) -> tuple[StageOutcome, dict[str, Path]]:
        """Run the stage and check its declared outputs exist; every way it can fail is recorded here."""
        state, iteration, stage_name, scratch = ctx.state, ctx.iteration, stage.name, ctx.out
        try:
            outcome = stage.run(ctx)
            outputs = self._declared_outputs(stage, ctx)
            # Specs, logs and summaries name the workspace as it is now; committed, they must not tie the run
            # to this place (a moved or copied workspace resumes from its own files). Before the hashes.
            store_text_files(scratch, self.services.workspace.root)
            # From here to the end of the commit, Ctrl-C is held and taken between stages.
            commit_guard.enter_context(interrupts.protect())
            if interrupts.requested():  # a library swallowed Ctrl-C: the outputs may be partial
                raise interrupts.UserInterrupt()
            return outcome, outputs
        except JobDetached:  # the job runs on: the stage stays in_progress with its handle, for resume
            state.status = "interrupted"
            state.failure = Failure(kind="detached", message="left a job running on purpose (--detach)",
                                    stage=stage_name, iteration=iteration, hard_stop=False,
                                    fix="`deft resume` re-attaches to the job (or collects it if it finished)")
            self.store.save(state)
            raise
        except (KeyboardInterrupt, Interrupted):  # a runner may already have turned Ctrl-C into Interrupted
            self._interrupted(state, iteration, stage_name, t0)
        except HardStop as exc:
            # Keep what the stage wrote (e.g. merge_validation.json) where the user will look for it.
            if not in_place and scratch.exists():
                shutil.rmtree(final, ignore_errors=True)
                final.parent.mkdir(parents=True, exist_ok=True)
                scratch.rename(final)
            self._fail(state, iteration, stage_name, t0, exc.kind, exc.render(), hard=True)
            raise
        except DeftError as exc:
            if interrupts.requested():  # e.g. pandas reports an interrupted read as a parse error
                self._interrupted(state, iteration, stage_name, t0)
            self._fail(state, iteration, stage_name, t0, type(exc).__name__, exc.render())
            raise
        except OSError as exc:
            if interrupts.requested():
                self._interrupted(state, iteration, stage_name, t0)
            problem = disk_error(exc, where=self.services.run.root)
            if problem is None:
                self._internal_error(state, iteration, stage_name, t0, exc)
            # What the stage half-wrote is redone from scratch on resume; removing it now frees the
            # space the failure record itself needs.
            shutil.rmtree(scratch, ignore_errors=True)
            with contextlib.suppress(OSError):  # still full or read-only: the stage stays in_progress,
                self._fail(state, iteration, stage_name, t0, problem.kind,  # which resume redoes too
                           f"{iteration} · {stage_name}: {problem.render()}")
            raise problem from None
        except Exception as exc:  # an internal bug must still leave a resumable, explained state
            if interrupts.requested():
                self._interrupted(state, iteration, stage_name, t0)
            self._internal_error(state, iteration, stage_name, t0, exc)

    @staticmethod
    def _declared_outputs(stage: Stage, ctx: StageContext) -> dict[str, Path]:
        """Where each declared output was written; a required one that is missing fails the stage."""
        outputs = {key: ctx.output(key) for key in declared(stage, "writes")}
        missing = [k for k, p in outputs.items() if not p.exists() and not artefact(k).optional]
        if missing:
            raise StageFailed(f"{ctx.iteration} · {stage.name} did not write its declared output(s): "
                              + ", ".join(f"{k} ({artefact(k).path})" for k in missing))
        return outputs

    def _remove_orphans(self, iteration: str, stage: str) -> None:
        """A deft killed mid-job (SIGKILL, power loss) leaves its container running: find it by its labels and
        remove it before the stage is redone, so two jobs never write the same outputs."""
        remove = getattr(self.services.runner, "remove_orphans", None)
        if remove is None:
            return
        for name in remove(stage_labels(self.services.run.run_id, iteration, stage)):  # any attempt's
            self.services.say(f"removed container {name} left running by an earlier deft ({iteration} · {stage})")

    def _commit_refused(self, state: RunState, iteration: str, stage: str, t0: float, dirs: tuple[Path, Path],
                        exc: OSError) -> NoReturn:
        """The disk refused the commit itself (the record, the move, the state, the log line): a write error
        names no file, so the message names the run's dir; the stage is failed (its outputs removed to make
        room for that record), never left `in_progress`, which status would read as a killed deft. Resume
        redoes it: a record already moved into place belongs to a stage the state calls failed."""
        problem = disk_error(exc, where=self.services.run.root)
        if problem is None:
            self._internal_error(state, iteration, stage, t0, exc)
        for path in dirs:
            shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):  # still no room: the stage stays in_progress, which resume redoes
            self._fail(state, iteration, stage, t0, problem.kind, f"{iteration} · {stage}: {problem.render()}")
        raise problem from None

    def _internal_error(self, state: RunState, iteration: str, stage: str, t0: float,
                        exc: BaseException) -> NoReturn:
        """One line naming the stage and the file holding the traceback; the stage is failed, resumable."""
        details = write_traceback(self.services.run.traceback_file(iteration, stage), exc)
        message = f"internal error in {iteration} · {stage}: {exc!r} ({details})"
        with contextlib.suppress(OSError):
            self._fail(state, iteration, stage, t0, "internal_error", message)
        raise StageFailed(message) from exc

    def _interrupted(self, state: RunState, iteration: str, stage: str, t0: float) -> NoReturn:
        self.services.stop_backend()
        self._fail(state, iteration, stage, t0, "interrupted", "interrupted by the user (Ctrl-C)", status="interrupted")
        raise Interrupted(f"interrupted during {iteration} · {stage}; resume with `deft resume`") from None

    def _fail(
        self,
        state: RunState,
        iteration: str,
        stage: str,
        t0: float,
        kind: str,
        message: str,
        *,
        hard: bool = False,
        status: str = "failed",
    ) -> None:
        duration = time.monotonic() - t0
        message = clean_text(redact(message))
        it = state.iteration(iteration)
        rec = it.stages[stage]
        rec.status = status  # type: ignore[assignment]
        rec.ended_at = utc_now()
        rec.duration_sec = round(duration, 3)
        rec.error = message
        it.status = status  # type: ignore[assignment]
        state.status = "interrupted" if status == "interrupted" else "failed"
        fix = fix_for(kind, hard=hard, interrupted=status == "interrupted")
        state.failure = Failure(kind=kind, message=message, stage=stage, iteration=iteration, hard_stop=hard, fix=fix)
        if hard:
            state.stop_reason = f"hard stop: {kind}"
        self.store.save(state)
        self.store.append_log(iteration=iteration, stage=stage, status="error", summary=message,
                              duration_sec=duration)

    def status_line(self, state: RunState, iteration: str, stage: str, duration: float) -> str:
        it = state.iterations[iteration]
        previous = state.iterations.get(previous_iteration(it.index))
        kpi = self.services.kpi
        if is_baseline(iteration) or previous is None:
            far = f"FAR {_fmt_pct(it.far_pct)}"
        else:  # before this iteration's evaluation its own FAR is still pending
            far = f"FAR {_fmt_pct(previous.far_pct)} → {'…' if it.far_pct is None else _fmt_pct(it.far_pct)}"
        return (f"[iter {it.index}/{state.max_iterations} · {stage}] {far} (target {kpi.operator}"
                f"{kpi.target_pct:g}%) · {_fmt_duration(duration)} · next: {stage_after(state, iteration, stage)}")


def new_run_id(results_root: Path) -> str:
    stamp = datetime.now(UTC).strftime("run_%Y%m%d_%H%M%S")
    candidate, n = stamp, 1
    while (results_root / candidate).exists():
        n += 1
        candidate = f"{stamp}_{n}"
    return candidate
