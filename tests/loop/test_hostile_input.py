"""Issue 16's reproductions through the CLI: hostile `.env` values, hostile flags and specs, a moved
workspace, unexpected exceptions. Each prints one clear message (no traceback) and leaves a state that
`deft status` reads and `deft resume` finishes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deft_aoi import secrets
from deft_aoi.cli.app import app

from ._runs import fingerprint

ARGS = ["--backend", "fake", "--yes", "--max-iterations", "1", "--epochs", "2", "--seed", "3"]
TRACEBACK = "Traceback (most recent call last)"


def deft(*args: str, env: dict[str, str] | None = None):
    result = CliRunner().invoke(app, list(args), env={"NO_COLOR": "1", "DEFT_FAKE_FAULT": "", **(env or {})})
    assert TRACEBACK not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


@pytest.fixture()
def fresh_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets, "_known", set())
    for name in secrets.SECRET_NAMES:
        monkeypatch.delenv(name, raising=False)


def only_run(ws: Path) -> Path:
    runs = sorted((ws / "results").glob("run_*"))
    assert len(runs) == 1, runs
    return runs[0]


# ---------------------------------------------------------------- 1. redaction never rewrites documents


def test_common_env_values_do_not_corrupt_the_state(demo_template: Path, tmp_path: Path, fresh_secrets: None) -> None:
    ws = tmp_path / "ws-test3"
    shutil.copytree(demo_template, ws)
    (ws / ".env").write_text("HF_TOKEN=test\nNGC_API_KEY=null\nWANDB_KEY_ENABLED=true\n")
    result = deft("run", "-w", str(ws), *ARGS, env={"DEFT_FAKE_FAULT": "inference:exit1"})
    assert result.exit_code == 1  # the injected fault, not the .env
    run = only_run(ws)
    state = json.loads((run / "deft_state.json").read_text())  # still valid JSON
    assert state["workspace"] == str(ws) and "***" not in (run / "deft_state.json").read_text()
    assert deft("status", "-w", str(ws), "--json").exit_code == 0
    assert deft("report", "-w", str(ws)).exit_code == 0
    resumed = deft("resume", "-w", str(ws))
    assert resumed.exit_code == 0, resumed.output


def test_real_secret_is_redacted_where_it_is_emitted(tmp_path: Path, fresh_secrets: None) -> None:
    from deft_aoi.errors import StageFailed

    from .test_engine import make_engine

    secret = "nvapi-0123456789abcdef"
    secrets.remember(secret)
    secrets.remember("test")  # too short and too common to search for
    engine, store, state, _ = make_engine(tmp_path / "ws-test3", max_iterations=1,
                                          fail={("baseline", "train"): StageFailed(f"login failed for {secret}")})
    with pytest.raises(StageFailed):
        engine.run(state)
    text = store.run.state_file.read_text()
    assert secret not in text and "login failed for ***" in text
    assert "ws-test3" in text
    assert secret not in store.run.log_file.read_text()


@pytest.mark.parametrize(("value", "worthy"), [("null", False), ("true", False), ("test", False),
                                               ("1234567", False), ("12345678", False), ("password", False),
                                               ("hf_abcdefgh", True), ("nvapi-0123456789", True)])
def test_which_values_are_searched_for(value: str, worthy: bool) -> None:
    assert secrets.is_secret_worthy(value) is worthy


# ---------------------------------------------------------------- 3. KPI targets at 0 %


def test_zero_kpi_target_is_checked_not_divided_by(demo_ws: Path) -> None:
    result = deft("preflight", "-w", str(demo_ws), "--kpi", "FAR<=0%@recall=100%", "--json")
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["KPI set size vs target"]["status"] == "warn"
    assert "unbounded number of PASS rows" in checks["KPI set size vs target"]["detail"]
    never = deft("preflight", "-w", str(demo_ws), "--kpi", "FAR<0%@recall=100%")
    assert never.exit_code == 2 and "can never be met" in never.output


# ---------------------------------------------------------------- 6. checks before anything starts


@pytest.mark.parametrize(("flag", "value", "words"), [("--seed", "-1", "--seed must be"),
                                                      ("--encoder", "evil", "unknown encoder 'evil'"),
                                                      ("--stage-timeout", "0", "--stage-timeout must be")])
def test_bad_flags_fail_before_anything_starts(demo_ws: Path, flag: str, value: str, words: str) -> None:
    args = [*ARGS]
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    result = deft("run", "-w", str(demo_ws), *args)
    assert result.exit_code == 2 and words in result.output
    assert not (demo_ws / "results").exists()


def test_spec_errors_name_the_file_and_json_still_prints(demo_ws: Path) -> None:
    spec = demo_ws / "specs" / "baseline_spec.yaml"
    text = spec.read_text()
    spec.write_text(text.replace("batch_size: ", "batch_size: -", 1))
    result = deft("preflight", "-w", str(demo_ws), "--json")
    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["spec"]["status"] == "fail"
    detail = checks["spec"]["detail"]
    assert str(spec) in detail and "dataset.classify.batch_size must be ≥ 1" in detail
    bad_kpi = deft("preflight", "-w", str(demo_ws), "--json", "--kpi", "FAR<<1")
    assert bad_kpi.exit_code == 2
    assert "cannot parse KPI target" in json.loads(bad_kpi.stdout)["error"]


@pytest.mark.parametrize(("edit", "words"), [
    (("image_height: ", "image_height: 0 #"), "dataset.classify.image_height must be ≥ 1, found 0"),
    (("num_epochs: ", "num_epoch: "), "unknown spec key 'train.num_epoch'"),
])
def test_spec_schema_is_checked_for_the_local_backend_too(demo_ws: Path, edit: tuple[str, str], words: str) -> None:
    spec = demo_ws / "specs" / "baseline_spec.yaml"
    spec.write_text(spec.read_text().replace(*edit, 1))
    result = deft("preflight", "-w", str(demo_ws), "--json", "--backend", "local")
    assert result.exit_code == 1
    details = " ".join(c["detail"] for c in json.loads(result.stdout)["checks"] if c["status"] == "fail")
    assert words in details


def test_missing_value_labels_warn_in_preflight(demo_ws: Path) -> None:
    csv = demo_ws / "train" / "base" / "training_set.csv"
    lines = csv.read_text().splitlines()
    for i in (1, 2):
        cells = lines[i].split(",")
        cells[2] = "NaN" if i == 1 else "null"
        lines[i] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")
    result = deft("preflight", "-w", str(demo_ws), "--json")
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["training CSV"]["status"] == "warn"
    assert "'nan' ×1" in checks["training CSV"]["detail"] and "'null' ×1" in checks["training CSV"]["detail"]


def test_object_name_escaping_the_images_root_fails_preflight(demo_ws: Path) -> None:
    outside = demo_ws.parent / "outside" / "img"
    outside.mkdir(parents=True)
    pool = demo_ws / "augmentation" / "mining_pool" / "mining_pool.csv"
    lines = pool.read_text().splitlines()
    cells = lines[1].split(",")
    for image in (demo_ws / "augmentation" / "mining_pool" / cells[0]).glob(f"{cells[3]}_*"):
        shutil.copy(image, outside / image.name.replace(cells[3], "secret"))
    cells[3] = "../../../../../outside/img/secret"
    lines[1] = ",".join(cells)
    pool.write_text("\n".join(lines) + "\n")
    result = deft("preflight", "-w", str(demo_ws), "--json")
    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    detail = checks["mining pool"]["detail"]
    assert checks["mining pool"]["status"] == "fail"
    assert "mining_pool.csv, row 2" in detail and "'object_name'" in detail and "outside" in detail


# ---------------------------------------------------------------- 7. a workspace that moves


def test_moved_workspace_resumes_to_the_same_result(demo_template: Path, tmp_path: Path) -> None:
    first, moved, clean = tmp_path / "first", tmp_path / "elsewhere" / "moved", tmp_path / "clean"
    shutil.copytree(demo_template, first)
    shutil.copytree(demo_template, clean)
    assert deft("run", "-w", str(clean), *ARGS).exit_code == 0
    assert deft("run", "-w", str(first), *ARGS, env={"DEFT_FAKE_FAULT": "inference:exit1"}).exit_code == 1
    moved.parent.mkdir()
    shutil.move(first, moved)
    assert deft("status", "-w", str(moved), "--json").exit_code == 0
    resumed = deft("resume", "-w", str(moved))
    assert resumed.exit_code == 0, resumed.output
    assert fingerprint(moved) == fingerprint(clean)


# ---------------------------------------------------------------- unexpected exceptions


def test_unexpected_exception_in_a_command_is_one_line(demo_ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deft_aoi.loop import status_view

    assert deft("run", "-w", str(demo_ws), *ARGS, env={"DEFT_FAKE_FAULT": "inference:exit1"}).exit_code == 1

    def broken(*_: object) -> dict:
        raise RuntimeError("boom")

    monkeypatch.setattr(status_view, "status_document", broken)
    result = deft("status", "-w", str(demo_ws))
    assert result.exit_code == 1
    assert "internal error in `deft status`: RuntimeError('boom') (traceback in " in result.output
    path = Path(result.output.split("traceback in ")[1].split(")")[0])
    assert "RuntimeError: boom" in path.read_text()


def test_unexpected_exception_in_a_stage_names_stage_and_file(tmp_path: Path) -> None:
    from deft_aoi.errors import StageFailed

    from .test_engine import make_engine

    engine, store, state, _ = make_engine(tmp_path, max_iterations=1, kpi_below=-1,
                                          fail={("baseline", "evaluate"): KeyError("far_pct")})
    with pytest.raises(StageFailed) as info:
        engine.run(state)
    message = info.value.render()
    assert message.startswith("internal error in baseline · evaluate: KeyError('far_pct') (traceback in ")
    assert store.load().failure.kind == "internal_error"  # type: ignore[union-attr]
    state = engine.run(engine.reconcile(store.load()))
    assert state.status == "finished"
