from __future__ import annotations

from pathlib import Path

import pytest

from deft_aoi.config import KpiTarget, resolve_config
from deft_aoi.errors import InputError, UsageError
from deft_aoi.runners.tao.changenet_spec import load_spec


def test_kpi_target_parsing() -> None:
    k = KpiTarget.parse("FAR<0.1%@recall=100%")
    assert (k.target_pct, k.operator, k.constraint_pct) == (0.1, "<", 100.0)
    k2 = KpiTarget.parse("far <= 2 % at recall = 99.5 %")
    assert (k2.target_pct, k2.operator, k2.constraint_pct) == (2.0, "<=", 99.5)
    assert k.is_met(0.05, 100.0) and not k.is_met(0.1, 100.0) and not k.is_met(0.0, 99.0)
    with pytest.raises(UsageError):
        KpiTarget.parse("accuracy>99%")


def test_config_sources() -> None:
    c = resolve_config({"max_iterations": 2}, {"num_epochs": 7, "batch_size": None})
    table = {name: (value, source) for name, value, source in c.table()}
    assert table["max_iterations"] == ("2", "flag")
    assert table["num_epochs"] == ("7", "spec")
    assert table["top_k_per_target"] == ("5", "default")
    with pytest.raises(UsageError):
        resolve_config({"backend": "kubernetes"}, {})


def test_spec_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  backbone: [unclosed\n")
    with pytest.raises(InputError, match=r"malformed YAML \(line"):
        load_spec(bad)
    no_map = tmp_path / "nomap.yaml"
    no_map.write_text("dataset:\n  classify:\n    image_ext: .jpg\n")
    with pytest.raises(InputError, match="input_map"):
        load_spec(no_map)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(InputError, match="mapping"):
        load_spec(listy)


def test_real_spec(deeppcb_dev: Path) -> None:
    spec = load_spec(deeppcb_dev / "specs" / "baseline_spec.yaml")
    assert spec.lights == ("SolderLight",)
    assert spec.image_ext == ".jpg" and spec.num_epochs == 10 and spec.cls_weight == (1.0, 10.0)


def test_job_timeout_is_sized_at_the_declared_rate() -> None:
    """A slow device asks for more seconds per row × epoch; --stage-timeout still overrides the sizing."""
    default = resolve_config({}, {})
    assert default.job_timeout_s(rows=100, epochs=10) == 1800.0 + 0.5 * 1000
    slow = resolve_config({"timeout_per_sample_epoch": 4.0}, {})
    assert slow.timeout_per_sample_epoch.source == "flag"
    assert slow.job_timeout_s(rows=100, epochs=10) == 1800.0 + 4.0 * 1000
    assert resolve_config({"timeout_per_sample_epoch": 4.0, "stage_timeout": 60.0}, {}).job_timeout_s(100, 10) == 60.0
    with pytest.raises(UsageError, match="--timeout-per-sample-epoch"):
        resolve_config({"timeout_per_sample_epoch": 0.0}, {})


def test_on_worse_defaults_to_exclude_and_names_its_choices() -> None:
    """The gate's protection (analysis/guard.py) is on unless the user turns it off."""
    assert resolve_config({}, {}).on_worse.value == "exclude"
    off = resolve_config({"on_worse": "off"}, {})
    assert (off.on_worse.value, off.on_worse.source) == ("off", "flag")
    with pytest.raises(UsageError, match="exclude, off"):
        resolve_config({"on_worse": "shrink"}, {})
