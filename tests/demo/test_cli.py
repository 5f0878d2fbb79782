from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from deft_aoi.cli import demo_cmd, init_cmd
from deft_aoi.errors import DeftError, InputError, UsageError


@pytest.fixture()
def app() -> typer.Typer:
    app = typer.Typer()
    demo_cmd.register(app)
    init_cmd.register(app)
    return app


def test_init_then_again_reports_created_and_kept(app: typer.Typer, tmp_path: Path) -> None:
    runner = CliRunner()
    ws = tmp_path / "ws"
    first = runner.invoke(app, ["init", "--workspace", str(ws), "--json"])
    assert first.exit_code == 0, first.output
    data = json.loads(first.stdout)
    assert data["kept"] == [] and str(ws.resolve() / "specs" / "baseline_spec.yaml") in data["created"]
    second = runner.invoke(app, ["init", "--workspace", str(ws)])
    assert second.exit_code == 0
    assert "kept" in second.stderr and "specs/baseline_spec.yaml" in second.stderr
    assert "created" not in second.stderr
    assert second.stdout == ""


def test_init_on_file_raises_input_error(app: typer.Typer, tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("x")
    result = CliRunner().invoke(app, ["init", "--workspace", str(target)])
    assert isinstance(result.exception, InputError)


def test_demo_data_json_and_refusal(app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict] = []

    def fake_generate(out: Path, **kwargs: object) -> object:
        # The CLI's job is argument plumbing and output; the generator has its own tests.
        from deft_aoi.demo.generator import DemoSummary

        calls.append({"out": out, **kwargs})
        return DemoSummary(path=out, seed=kwargs["seed"], size=kwargs["size"], rows={"kpi": 2},
                           labels={"kpi": {"PASS": 1, "shift": 1}}, nuisance_rows={"kpi": 1},
                           synthetic_pairs={"scratch": 1}, files=6, total_bytes=100)

    monkeypatch.setattr("deft_aoi.demo.generator.generate_workspace", fake_generate)
    runner = CliRunner()
    result = runner.invoke(app, ["demo-data", "--out", str(tmp_path / "w"), "--seed", "3", "--size", "medium",
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["labels"] == {"kpi": {"PASS": 1, "shift": 1}}
    assert calls == [{"out": tmp_path / "w", "seed": 3, "size": "medium", "force": False}]

    text = runner.invoke(app, ["demo-data", "--out", str(tmp_path / "w"), "--force"])
    assert text.exit_code == 0 and text.stdout == ""
    assert "kpi" in text.stderr and "PASS 1, shift 1" in text.stderr
    assert calls[-1]["force"] is True and calls[-1]["seed"] == 7 and calls[-1]["size"] == "small"


def test_demo_data_bad_size_is_a_usage_error(app: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo-data", "--out", str(tmp_path / "w"), "--size", "huge"])
    assert result.exit_code == 2
    assert not (tmp_path / "w").exists()


def test_demo_data_refuses_non_empty_dir(app: typer.Typer, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    result = CliRunner().invoke(app, ["demo-data", "--out", str(tmp_path)])
    assert isinstance(result.exception, UsageError)
    assert isinstance(result.exception, DeftError) and result.exception.exit_code == 2
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_command_modules_import_nothing_heavy() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import deft_aoi.cli.demo_cmd, deft_aoi.cli.init_cmd; "
        "heavy = [m for m in ('numpy', 'pandas', 'PIL', 'torch', 'faiss', 'jinja2') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
