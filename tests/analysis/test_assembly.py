from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deft_aoi.analysis.assembly import Assembly, assemble, check_no_silent_drop, write_assembly
from deft_aoi.errors import HardStop, InputError
from deft_aoi.workspace.changenet_csv import CHANGENET_COLUMNS, read_changenet_csv

from .helpers import frame, row


def test_previous_rows_kept_in_order_and_new_unique_appended() -> None:
    previous = frame([row("1", label="Open"), row("2", label="pass"), row("2", label="pass")])
    mined = frame([
        row("2", label="PASS", source="mining_pool"),  # already trained on
        row("8", label="Short ", source="synthetic"),
        row("9", source="mining_pool"),
        row("9", source="mining_pool"),  # mined twice
    ])
    a = assemble(previous, "base_train", mined)
    assert (a.n_previous, a.n_new_unique, a.n_duplicates) == (3, 2, 2)
    assert a.combined["object_name"].tolist() == ["d1", "d2", "d2", "d8", "d9"]
    assert a.combined["label"].tolist() == ["open", "PASS", "PASS", "short", "open"]
    assert list(a.combined.columns) == list(CHANGENET_COLUMNS)
    assert a.provenance["source"].tolist() == ["base_train"] * 3 + ["mining_pool"] * 2
    assert a.provenance["pool_origin"].tolist() == ["", "", "", "synthetic", "real"]
    assert a.provenance["row"].tolist() == [2, 3, 4, 5, 6]


def test_later_iteration_marks_previous_iter_and_untagged_mined_rows_are_real() -> None:
    a = assemble(frame([row("1")]), "previous_iter_train", frame([row("2")]))
    assert a.provenance["source"].tolist() == ["previous_iter_train", "mining_pool"]
    assert a.provenance["pool_origin"].tolist() == ["", "real"]


def test_no_mined_rows_keeps_previous() -> None:
    a = assemble(frame([row("1"), row("2")]), "base_train", frame([row("3")]).iloc[0:0])
    assert len(a.combined) == 2 and a.n_new_unique == 0 and a.n_duplicates == 0


def test_rows_outside_workspace_coordinates_are_rejected() -> None:
    mined = frame([row("2")])
    mined.loc[0, "input_path"] = "/abs/images/test"
    with pytest.raises(InputError, match="not workspace-relative"):
        assemble(frame([row("1")]), "base_train", mined)


def test_unknown_pool_source_is_rejected() -> None:
    with pytest.raises(InputError, match="unknown source 'sdg'"):
        assemble(frame([row("1")]), "base_train", frame([row("2", source="sdg")]))


def test_silent_drop_guard_catches_lost_rows() -> None:
    previous = frame([row("1"), row("1"), row("2")])
    mined = frame([row("3")])
    check_no_silent_drop(previous, mined, frame([row("1"), row("1"), row("2"), row("3")]))
    with pytest.raises(HardStop, match="lost 1 earlier") as info:
        check_no_silent_drop(previous, mined, frame([row("1"), row("2"), row("3")]))
    assert info.value.kind == "silent_drop"
    with pytest.raises(HardStop, match="lost 1 mined") as info:
        check_no_silent_drop(previous, mined, frame([row("1"), row("1"), row("2")]))
    assert info.value.kind == "silent_drop"


_rows = st.lists(st.tuples(st.integers(0, 6), st.sampled_from(["PASS", "open"])), max_size=20)


@settings(max_examples=15, deadline=None)
@given(_rows, _rows)
def test_assembly_is_monotonic(prev_spec: list[tuple[int, str]], new_spec: list[tuple[int, str]]) -> None:
    previous = frame([row(str(i), label=lab) for i, lab in prev_spec] or [row("x")])
    mined = frame([row(str(i), label=lab) for i, lab in new_spec] or [row("x")])
    a = assemble(previous, "base_train", mined)
    pd.testing.assert_frame_equal(a.combined.iloc[: len(previous)][["input_path", "label"]],
                                  previous[["input_path", "label"]].reset_index(drop=True))
    prev_keys = {(r["input_path"], r["label"]) for _, r in previous.iterrows()}
    new_keys = {(r["input_path"], r["label"]) for _, r in mined.iterrows()} - prev_keys
    assert a.n_new_unique == len(new_keys)
    assert len(a.combined) == len(previous) + len(new_keys)


def test_write_assembly_round_trips(tmp_path: Path) -> None:
    a = assemble(frame([row("1")]), "base_train", frame([row("2", source="synthetic")]))
    csv_path, prov_path = write_assembly(a, tmp_path / "dataset", 1)
    assert csv_path.name == "train_combined_iter1.csv"
    assert prov_path.name == "train_combined_iter1_provenance.csv"
    assert read_changenet_csv(csv_path)["object_name"].tolist() == ["d1", "d2"]
    prov = pd.read_csv(prov_path, dtype=str, keep_default_na=False)
    assert prov["pool_origin"].tolist() == ["", "synthetic"]


def test_write_assembly_refuses_inconsistent_counts(tmp_path: Path) -> None:
    a = assemble(frame([row("1")]), "base_train", frame([row("2")]))
    broken = Assembly(combined=a.combined.iloc[:1], provenance=a.provenance.iloc[:1], n_previous=1,
                      n_new_unique=1, n_duplicates=0)
    with pytest.raises(HardStop) as info:
        write_assembly(broken, tmp_path, 2)
    assert info.value.kind == "silent_drop"
    assert not (tmp_path / "train_combined_iter2.csv").exists()
