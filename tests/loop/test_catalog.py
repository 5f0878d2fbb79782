"""The run catalog and the stage contract: declared reads/writes, hashes in .stage.json, generic resume checks,
and states / stage records of older versions."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from deft_aoi.errors import StageFailed
from deft_aoi.loop.artefacts import (
    changed_outputs,
    checkpoint_file,
    checkpoints,
    chosen_checkpoint,
    digest,
    find,
    hash_artefacts,
    link_checkpoint,
)
from deft_aoi.loop.stage_contract import StageContext, StageOutcome
from deft_aoi.loop.stages import build_stages
from deft_aoi.loop.state import IterationState, RunState
from deft_aoi.loop.store import StateStore
from deft_aoi.workspace.catalog import CATALOG, CHECKPOINT_KEYS, STAGE_DIRS, artefact, stage_dir
from deft_aoi.workspace.layout import RunLayout

from .test_engine import make_engine, make_state

RUN_STEPS = {"start", "engine", "report"}
OLD_STATE = Path(__file__).parent / "fixtures" / "deft_state_before_settings.json"


def test_every_stage_declares_catalog_keys_and_lives_in_its_catalog_dir() -> None:
    for name, stage in build_stages().items():
        assert set(stage.reads) | set(stage.writes) <= set(CATALOG), name
        assert all(artefact(k).writer == name for k in stage.writes), name
        ctx = StageContext(None, None, "iter2", 2, Path("/x"), "2026-01-02T03:04:05Z")  # type: ignore[arg-type]
        assert stage.output_dir(ctx) == stage_dir(name, "iter2", "20260102_030405")
    for art in CATALOG.values():
        assert art.writer in STAGE_DIRS or art.writer in RUN_STEPS, art.key
        assert art.key.split(".")[0] in (art.writer, "run", "stage"), art.key
    # every stage-written artefact is declared by its writer, so the engine hashes it
    declared = {k for s in build_stages().values() for k in s.writes}
    assert {a.key for a in CATALOG.values() if a.writer in STAGE_DIRS} == declared


class Declaring:
    """A stand-in stage that writes and reads real catalog artefacts."""

    def __init__(self, name: str, reads: tuple[str, ...], writes: tuple[str, ...], *, skip: str = "") -> None:
        self.name, self.reads, self.writes, self.skip = name, reads, writes, skip

    def output_dir(self, ctx: StageContext) -> str:
        return stage_dir(self.name, ctx.iteration, ctx.stamp)

    def run(self, ctx: StageContext) -> StageOutcome:
        for key in self.writes:
            if key != self.skip:
                path = ctx.output(key)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"{ctx.iteration} {key}")
        for key in self.reads:
            ctx.input(key)  # resolves through the catalog, or fails the stage
        return StageOutcome(summary=f"{self.name} done")


def _engine_with(tmp_path: Path, *stages: Declaring, max_iterations: int = 1):
    engine, store, state, _ = make_engine(tmp_path, max_iterations=max_iterations, kpi_below=-1)
    engine.stages = {**engine.stages, **{s.name: s for s in stages}}
    return engine, store, state


def test_stage_json_records_sha256_of_declared_inputs_and_outputs(tmp_path: Path) -> None:
    rca = Declaring("rca", (), ("rca.kpi_gaps", "rca.threshold"))
    route = Declaring("route", ("rca.kpi_gaps",), ("route.mining_gaps", "route.anomalygen_gaps", "route.summary"))
    engine, store, state = _engine_with(tmp_path, rca, route)
    state = engine.run(engine.reconcile(state))
    run = store.run
    rec = state.iterations["iter1"].stages["route"]
    record = json.loads((run.root / rec.output_dir / ".stage.json").read_text())
    assert record["record_version"] == 2
    gaps = find(run, state, "rca.kpi_gaps", "baseline", walk_back=False)
    assert gaps is not None and gaps.parent.parent.name == "rca_results"
    assert record["inputs"]["rca.kpi_gaps"] == {
        "path": gaps.relative_to(run.root).as_posix(),
        "sha256": hashlib.sha256(gaps.read_bytes()).hexdigest(), "size": gaps.stat().st_size}
    summary = run.root / rec.output_dir / "routing_summary.txt"
    assert record["outputs"]["route.summary"]["sha256"] == hashlib.sha256(summary.read_bytes()).hexdigest()
    assert record["outputs"]["route.summary"]["path"] == f"{rec.output_dir}/routing_summary.txt"
    assert set(rec.outputs) == {"route.mining_gaps", "route.anomalygen_gaps", "route.summary"}
    # the state rebuilt from the log + records carries the same hashes
    assert StateStore(run).rebuild().iterations["iter1"].stages["route"].outputs == rec.outputs


def test_a_declared_output_the_stage_did_not_write_fails_it(tmp_path: Path) -> None:
    engine, _, state = _engine_with(tmp_path, Declaring("rca", (), ("rca.kpi_gaps", "rca.threshold"),
                                                            skip="rca.threshold"))
    with pytest.raises(StageFailed, match=r"rca.threshold \(threshold.txt\)"):
        engine.run(engine.reconcile(state))
    assert state.iterations["baseline"].stages["rca"].status == "failed"
    # optional outputs may be absent
    engine, _, state = _engine_with(tmp_path / "b", Declaring("rca", (), ("rca.kpi_gaps", "rca.suspects"),
                                                                  skip="rca.suspects"))
    state = engine.run(engine.reconcile(state))
    assert set(state.iterations["baseline"].stages["rca"].outputs) == {"rca.kpi_gaps"}


def test_resume_trusts_a_committed_stage_only_while_its_outputs_hash_as_recorded(tmp_path: Path) -> None:
    engine, store, state = _engine_with(tmp_path, Declaring("rca", (), ("rca.kpi_gaps", "rca.threshold")))
    state = engine.run(engine.reconcile(state))
    assert changed_outputs(store.run, state) == []
    gaps = find(store.run, state, "rca.kpi_gaps", "baseline", walk_back=False)
    assert gaps is not None
    gaps.write_text("edited")
    rel = gaps.relative_to(store.run.root).as_posix()
    assert changed_outputs(store.run, state) == [f"baseline · rca: rca.kpi_gaps ({rel})"]
    gaps.unlink()
    assert len(changed_outputs(store.run, state)) == 1


def test_dir_digest_covers_names_sizes_and_contents_but_not_excluded_logs(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.pth").write_bytes(b"12")
    (tmp_path / "a" / "train.log").write_text("log")
    (tmp_path / "a" / ".stage.json").write_text("{}")
    first = digest(tmp_path / "a", ("*.log",))
    (tmp_path / "a" / "train.log").write_text("log + a torn tail \x00")
    (tmp_path / "a" / ".stage.json").write_text('{"x": 1}')
    assert digest(tmp_path / "a", ("*.log",)) == first and first[1] == 2
    (tmp_path / "a" / "x.pth").write_bytes(b"13")
    assert digest(tmp_path / "a", ("*.log",))[0] != first[0]
    (tmp_path / "a" / "x.pth").rename(tmp_path / "a" / "y.pth")
    assert digest(tmp_path / "a", ("*.log",))[0] != first[0]


LEGACY_ITERATION = {
    "name": "baseline", "index": 0, "status": "complete", "rca_gaps_parquet": "baseline/rca_results/x/kpi_gaps.parquet",
    "rca_threshold": 0.5, "routing_mining_gaps": None, "train_csv": "/ws/train.csv",
    "stages": {
        "stage_synth": {"status": "complete", "started_at": "t", "output_dir": "synth_pool",
                        "outputs": {"manifest": "/r/synth_pool/manifest.json", "manifest_sha256": "ab" * 32}},
        "rca": {"status": "complete", "started_at": "t", "output_dir": "baseline/rca_results/x",
                "outputs": {"kpi_gaps": "/r/x.parquet", "unreachable": True}},
        "gate": {"status": "complete", "started_at": "t", "output_dir": "baseline/gate",
                 "outputs": {"decision": "continue"}},
    },
}


def test_states_of_older_versions_load_with_values_lifted_into_typed_fields() -> None:
    it = IterationState.model_validate(LEGACY_ITERATION)
    assert it.decision == "continue" and it.kpi_unreachable is True
    assert not hasattr(it, "rca_gaps_parquet") and not hasattr(it, "train_csv")
    assert it.stages["gate"].outputs == {} and it.stages["rca"].outputs == {}
    # the one hash old runs recorded still guards resume
    synth = it.stages["stage_synth"].outputs["stage_synth.manifest"]
    assert synth.path == "synth_pool/manifest.json" and synth.sha256 == "ab" * 32 and synth.size is None


def test_old_stage_records_without_hashes_rebuild_and_are_trusted(tmp_path: Path) -> None:
    run = RunLayout(tmp_path / "results" / "run_1")
    store = StateStore(run)
    store.write_initial(make_state(run, 1))
    gate = run.root / "baseline" / "gate"
    gate.mkdir(parents=True)
    (gate / ".stage.json").write_text(json.dumps({
        "iteration": "baseline", "stage": "gate", "started_at": "t", "output_dir": "baseline/gate",
        "outputs": {"decision": "max_iterations"}, "updates": {}, "closes_iteration": True}))
    store.append_log(iteration="baseline", stage="gate", status="ok", summary="", duration_sec=0.0)
    state: RunState = store.rebuild()
    assert state.iterations["baseline"].decision == "max_iterations"
    assert changed_outputs(run, state) == []


class Sneaking(Declaring):
    """Reads `sneaks` besides what it declares."""

    def __init__(self, name: str, reads: tuple[str, ...], writes: tuple[str, ...], sneaks: str) -> None:
        super().__init__(name, reads, writes)
        self.sneaks = sneaks

    def run(self, ctx: StageContext) -> StageOutcome:
        outcome = super().run(ctx)
        ctx.input(self.sneaks)
        return outcome


def test_a_stage_reading_an_artefact_it_did_not_declare_fails(tmp_path: Path) -> None:
    rca = Declaring("rca", (), ("rca.kpi_gaps", "rca.threshold"))
    route = Sneaking("route", (), ("route.mining_gaps", "route.anomalygen_gaps", "route.summary"),
                     sneaks="rca.kpi_gaps")
    engine, _, state = _engine_with(tmp_path, rca, route)
    with pytest.raises(StageFailed, match=r"reads rca.kpi_gaps, which the stage does not declare"):
        engine.run(engine.reconcile(state))
    assert state.iterations["iter1"].stages["route"].status == "failed"


@pytest.mark.slow
def test_every_stage_reads_exactly_what_it_declares(demo_ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real stages on the fake backend, two iterations (so each earlier-iteration read happens): a read a
    stage did not declare fails it (above); a read it declares and never makes is reported here."""
    from deft_aoi.loop.engine import Engine

    from .test_cli_loop import FAST, deft

    made: dict[str, set[str]] = {}
    call = Engine._call

    def recording(self: Engine, stage, ctx: StageContext, *args):  # type: ignore[no-untyped-def]
        try:
            return call(self, stage, ctx, *args)
        finally:
            made.setdefault(stage.name, set()).update(ctx.reads_made)

    monkeypatch.setattr(Engine, "_call", recording)
    args = ["run", "-w", str(demo_ws), "--yes", *FAST, "--min-similarity", "0.5"]
    args[args.index("--max-iterations") + 1] = "2"
    result = deft(*args)
    assert result.exit_code == 0, result.output
    declared = {name: set(stage.reads) for name, stage in build_stages().items()}
    assert made == declared


def test_a_checkpoint_artefact_links_the_tao_file_and_survives_a_move_and_a_copy(tmp_path: Path) -> None:
    """The catalog names each checkpoint kind at a fixed place (TAO names its files by epoch and step): a
    relative link, handed to a stage as the file it names, spelt as TAO wrote it; the train dir's own hash
    leaves the links out (each is recorded on its own), and a checkpoint two kinds link is hashed once."""
    train = tmp_path / "run" / "iter1" / "train"
    train.mkdir(parents=True)
    tao = train / "model_epoch_003_step_00012.pth"
    tao.write_bytes(b"weights")
    before = digest(train, artefact("train.results").exclude)
    links = {key: artefact(key).at(train) for key in CHECKPOINT_KEYS}
    for link in links.values():
        link_checkpoint(link, tao, relative_under=train)
        link_checkpoint(link, tao, relative_under=train)  # again, as a re-attached train stage does
    assert all(os.readlink(link) == "../model_epoch_003_step_00012.pth" for link in links.values())
    assert {checkpoint_file(link) for link in links.values()} == {tao}
    assert digest(train, artefact("train.results").exclude) == before
    memo: dict[str, tuple[str, int]] = {}
    hashed = hash_artefacts(links, tmp_path / "run")
    assert {h["sha256"] for h in hashed.values()} == {hashlib.sha256(b"weights").hexdigest()}
    assert hashed["train.latest"]["path"] == "iter1/train/checkpoints/latest.pth"
    digest(links["train.best_val"], memo=memo)
    digest(links["train.latest"], memo=memo)
    assert list(memo) == [os.path.realpath(tao)]

    moved = tmp_path / "moved"
    shutil.move(tmp_path / "run", moved)
    link = artefact("train.best_far").at(moved / "iter1" / "train")
    assert checkpoint_file(link) == moved / "iter1" / "train" / tao.name and checkpoint_file(link).is_file()
    copied = tmp_path / "copied"
    shutil.copytree(moved, copied)  # links followed: the copy holds the file itself, which is what is handed
    plain = artefact("train.best_far").at(copied / "iter1" / "train")
    assert not plain.is_symlink() and checkpoint_file(plain) == plain
    # outside the dir it is relative under (a seeded checkpoint elsewhere): absolute
    elsewhere = tmp_path / "elsewhere.pth"
    elsewhere.write_bytes(b"w")
    link_checkpoint(links["train.best_val"].with_name("x.pth"), elsewhere, relative_under=moved)
    assert os.readlink(links["train.best_val"].with_name("x.pth")) == str(elsewhere)


def test_a_stage_is_handed_the_checkpoint_and_the_engine_records_where_it_was_read(tmp_path: Path) -> None:
    """A stage reads a checkpoint of an earlier iteration (a fine-tune's start) through the catalog: it gets
    TAO's file, and `.stage.json` records that iteration's checkpoint as the input, not the latest one."""
    class Training(Declaring):
        def run(self, ctx: StageContext) -> StageOutcome:
            (ctx.out / "model_epoch_000_step_00001.pth").write_text(ctx.iteration)
            for key in self.writes:
                link_checkpoint(ctx.output(key), ctx.out / "model_epoch_000_step_00001.pth", relative_under=ctx.out)
            if ctx.index == 2:
                self.got = ctx.find("train.best_val", "baseline")
            return StageOutcome(summary="trained")

    train = Training("train", ("train.best_val",), CHECKPOINT_KEYS)
    train.reads_earlier = ("train.best_val",)  # type: ignore[attr-defined]
    engine, store, state = _engine_with(tmp_path, train, max_iterations=2)
    state = engine.run(engine.reconcile(state))
    base = store.run.root / state.iterations["baseline"].stages["train"].output_dir  # type: ignore[operator]
    assert train.got == base / "model_epoch_000_step_00001.pth" and train.got.read_text() == "baseline"
    rec = state.iterations["iter2"].stages["train"]
    assert rec.inputs["train.best_val"].path == "baseline/train/checkpoints/best_val.pth"
    assert set(rec.outputs) == set(CHECKPOINT_KEYS)


def test_states_of_older_versions_keep_their_checkpoint_paths() -> None:
    """Runs recorded before checkpoints were catalog artefacts kept them as paths (`checkpoints`, and the chosen
    one as `best_ckpt_path`): read back as `recorded_checkpoints`, which the catalog's reader falls back to."""
    old = json.loads(OLD_STATE.read_text())
    loaded = RunState.model_validate(old)
    run = RunLayout(Path(loaded.results_dir))
    for name, it in old["iterations"].items():
        assert loaded.iterations[name].recorded_checkpoints == it["checkpoints"]
        assert checkpoints(run, loaded, name) == {k: Path(v) for k, v in it["checkpoints"].items()}
        assert chosen_checkpoint(run, loaded, name) == Path(it["best_ckpt_path"])
    dumped = json.loads(loaded.model_dump_json())
    # best_ckpt_path (CONTRACTS §8) is written as a view; read back, it is not a second copy
    assert dumped["iterations"]["iter1"]["best_ckpt_path"] == old["iterations"]["iter1"]["best_ckpt_path"]
    assert RunState.model_validate(dumped).iterations == loaded.iterations
    # a run started since keeps no paths: the view is the catalog's link of the chosen kind
    fresh = IterationState(name="iter1", index=1, chosen_checkpoint="latest",
                           stages={"train": {"status": "complete", "started_at": "t", "output_dir": "iter1/train"}})
    assert "recorded_checkpoints" not in json.loads(fresh.model_dump_json())
    assert fresh.best_ckpt_path("/r") == "/r/iter1/train/checkpoints/latest.pth"
