"""What a stage is to the engine: the `Stage` protocol, what it may use (`LoopServices`, `StageContext`) and
what it returns (`StageOutcome`).

A stage declares the run-catalog keys it reads and writes (`reads` / `writes`, DVC's deps / outs); the engine
hashes them into the stage's `.stage.json`. Values the loop reads back travel as typed IterationState fields
(`updates`) and RunState fields (`run_updates`); files travel only as declared catalog keys.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, ConfigDict, Field

from deft_aoi.errors import StageFailed
from deft_aoi.loop.artefacts import checkpoint, fields_of, find
from deft_aoi.loop.results import IterationValues, RunValues
from deft_aoi.loop.state import RunState
from deft_aoi.workspace.catalog import artefact, checkpoint_kind, stage_dir
from deft_aoi.workspace.iterations import previous_iteration

if TYPE_CHECKING:
    from deft_aoi.config import KpiTarget, LoopConfig
    from deft_aoi.runners.base import Runner
    from deft_aoi.runners.jobs import JobJournal
    from deft_aoi.runners.tao.changenet_spec import ChangeNetSpec
    from deft_aoi.workspace.layout import RunLayout, WorkspaceLayout


class StageOutcome(BaseModel):
    """What a stage returns besides its files. `updates` / `run_updates` are typed (loop/results.py) and refuse
    unknown keys: a value the loop would not keep fails the stage where it is returned."""

    model_config = ConfigDict(extra="forbid")

    summary: str
    updates: IterationValues = Field(default_factory=IterationValues)  # IterationState fields
    run_updates: RunValues = Field(default_factory=RunValues)  # RunState fields
    closes_iteration: bool = False
    closes_run: bool = False


@dataclass
class LoopServices:
    """What stages may use. Stages read `state` but never write it: they return a StageOutcome."""

    workspace: WorkspaceLayout
    run: RunLayout
    spec: ChangeNetSpec
    config: LoopConfig
    kpi: KpiTarget
    runner_factory: Callable[[], Runner]
    say: Callable[[str], None] = lambda _msg: None
    labels: dict[str, str] = field(default_factory=dict)  # of the stage running now; jobs carry them
    journal: JobJournal | None = None  # of the stage running now: where durable runners record job handles
    _runner: Runner | None = None

    @property
    def runner(self) -> Runner:
        if self._runner is None:
            self._runner = self.runner_factory()
        with contextlib.suppress(AttributeError):  # a test's stand-in runner may have no journal slot
            self._runner.journal = self.journal
        return self._runner

    def stop_backend(self) -> None:
        if self._runner is not None:
            self._runner.stop()


class UndeclaredRead(StageFailed):
    """A stage asked for a catalog artefact it does not declare in `reads`: a programming error, raised at once."""


@dataclass
class StageContext:
    services: LoopServices
    state: RunState
    iteration: str
    index: int
    out: Path  # the scratch dir the stage writes into
    started_at: str
    # The running stage's declared reads (the engine sets them): `input` / `find` hand out these artefacts only.
    reads: tuple[str, ...] = ()
    # Every key the stage asked for (tests compare it with the declaration: a read declared and never made).
    reads_made: set[str] = field(default_factory=set)
    # Where `find` found each key (its catalog location; the last one read): the stage's inputs as the engine
    # hashes them into .stage.json, so a read of an earlier iteration (a fine-tune's start) is recorded as made.
    read_at: dict[str, Path] = field(default_factory=dict)

    @property
    def max_iterations(self) -> int:
        return self.state.max_iterations

    def previous_iteration(self) -> str:
        return previous_iteration(self.index)

    @property
    def stamp(self) -> str:
        """`YYYYMMDD_HHMMSS` of the stage's start, for `rca_results/<TS>/`-style dirs."""
        return self.started_at.replace("-", "").replace(":", "").replace("T", "_").removesuffix("Z")[:15]

    def output(self, key: str) -> Path:
        """Where this stage writes catalog artefact `key` (its scratch dir, or the run dir for run scope)."""
        art = artefact(key)
        base = self.services.run.root if art.scope == "run" else self.out
        return art.at(base, **fields_of(self.iteration))

    def uses(self, key: str) -> str:
        """`key`, once checked against the stage's declared reads (UndeclaredRead otherwise) and recorded. Every
        read of a catalog artefact by a stage goes through here (`input`, `find`, loop/stages/common.py)."""
        if key not in self.reads:
            raise UndeclaredRead(f"{self.iteration}: reads {key}, which the stage does not declare in `reads` "
                                 f"({', '.join(self.reads) or 'none'}); declare it (loop/stages)")
        self.reads_made.add(key)
        return key

    def find(self, key: str, iteration: str, *, walk_back: bool = False) -> Path | None:
        """Declared artefact `key` of `iteration` (artefacts.find), or None when its writer did not commit there.
        A checkpoint is handed as the file its artefact names (artefacts.checkpoint: TAO's file, or the path an
        older run recorded)."""
        where = find(self.services.run, self.state, self.uses(key), iteration, walk_back=walk_back)
        if where is not None:
            self.read_at[key] = where
        if artefact(key).format == "checkpoint":  # of `iteration` itself: no stage looks further back for one
            return checkpoint(self.services.run, self.state, iteration, checkpoint_kind(key))
        return where

    def input(self, key: str, iteration: str | None = None) -> Path:
        """Declared catalog artefact `key` as committed by its writer: in `iteration` (default: this one, else
        the latest earlier iteration that wrote it). Raises StageFailed when no such stage committed."""
        path = self.find(key, iteration or self.iteration, walk_back=iteration is None)
        if path is None or not path.exists():
            where = iteration or self.iteration
            raise StageFailed(f"{where}: no committed {key} ({artefact(key).path}); an earlier stage is missing")
        return path


class Stage(Protocol):
    name: str

    @property
    def reads(self) -> tuple[str, ...]:
        """Run-catalog keys (workspace/catalog.py) this stage reads; the engine hashes them into .stage.json."""
        ...

    @property
    def writes(self) -> tuple[str, ...]:
        """Run-catalog keys this stage writes (hashed likewise); a required one that is missing fails it."""
        ...

    def output_dir(self, ctx: StageContext) -> str:
        """Final location of this stage's outputs, relative to the run dir."""
        ...

    def run(self, ctx: StageContext) -> StageOutcome: ...


class CatalogDir:
    """Base of the loop's stages: declarations default to none, the output dir is the catalog's for the stage."""

    name: str
    reads: tuple[str, ...] = ()
    # Keys among `reads` taken from an EARLIER iteration (the route stage reads the previous RCA's gaps): the one
    # fact the stage order's test (tests/loop/test_graph_order.py) needs besides reads and writes.
    reads_earlier: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()

    def output_dir(self, ctx: StageContext) -> str:
        return stage_dir(self.name, ctx.iteration, ctx.stamp)
