"""The gate's protection, pure (analysis/guard.py): when is an iteration worse than the best so far, what is set
aside, grouped how, and which rows of a later assembly the fine-tune leaves out."""

from __future__ import annotations

import pandas as pd
import pytest

from deft_aoi.analysis.assembly import set_aside_by
from deft_aoi.analysis.guard import NO_TARGET, best_before, decide_guard, group_rows, is_worse
from deft_aoi.config import KpiTarget
from deft_aoi.workspace.changenet_csv import CHANGENET_COLUMNS

KPI = KpiTarget.parse("FAR<0.1%@recall=100%")


def rows(*specs: tuple[str, str, str, str]) -> pd.DataFrame:
    """(object_name, label, source, target_label) → ChangeNet rows + source + target_label."""
    data = []
    for obj, label, source, target in specs:
        row = dict.fromkeys(CHANGENET_COLUMNS, "")
        row.update(input_path=f"augmentation/mining_pool/images/{obj}/test",
                   golden_path=f"augmentation/mining_pool/images/{obj}/golden", object_name=obj, label=label,
                   boardname="b1")
        data.append({**row, "source": source, "target_label": target})
    return pd.DataFrame(data, columns=[*CHANGENET_COLUMNS, "source", "target_label"])


ADDED = rows(("a", "PASS", "real", "PASS"), ("b", "PASS", "real", "PASS"), ("c", "short", "real", "PASS"),
             ("d", "PASS", "synthetic", "open"), ("e", "Short", "real", "PASS"))


def test_best_before_is_the_lowest_far_meeting_recall_earliest_on_a_tie() -> None:
    earlier = [("baseline", 4.3, 100.0), ("iter1", 1.4, 100.0), ("iter2", 1.4, 100.0), ("iter3", 0.2, 98.0)]
    assert best_before(earlier, KPI) == ("iter1", 1.4)  # iter3 misses recall 100 %
    assert best_before([("baseline", None, None)], KPI) is None


@pytest.mark.parametrize(("far", "recall", "worse"), [
    (7.1, 100.0, True),  # run 9, fold3 seed 0: 4.3 → 1.4 → 7.1
    (1.4, 100.0, False),  # a tie is not worse
    (1.0, 100.0, False),
    (0.0, 99.0, True),  # recall constraint missed: no FAR to compare with
    (None, None, True),
])
def test_is_worse(far: float | None, recall: float | None, worse: bool) -> None:
    assert is_worse(far, recall, 1.4, KPI) is worse


def test_groups_count_source_label_and_target_label_largest_first() -> None:
    groups = [(g.source, g.label, g.target_label, g.n) for g in group_rows(ADDED)]
    # labels normalised as TAO reads them ("Short" and "short" are one defect label)
    assert groups == [("real", "PASS", "PASS", 2), ("real", "short", "PASS", 2), ("synthetic", "PASS", "open", 1)]
    unknown = group_rows(ADDED.assign(target_label=None))
    assert {g.target_label for g in unknown} == {NO_TARGET}
    assert group_rows(ADDED.iloc[0:0]) == []


def test_decision_sets_aside_every_added_row_of_a_worse_iteration_and_names_the_best() -> None:
    earlier = [("baseline", 4.3, 100.0), ("iter1", 1.4, 100.0)]
    decision = decide_guard("iter2", 7.1, 100.0, earlier, ADDED, KPI)
    assert decision is not None
    assert (decision.iteration, decision.action, decision.best_iteration, decision.best_far_pct) == \
        ("iter2", "exclude", "iter1", 1.4)
    assert decision.rows == 5 == sum(g.n for g in decision.groups)
    words = decision.words()
    assert "iter2 made FAR worse" in words and "7.10% vs 1.40% at iter1" in words and "5 added row(s)" in words
    missed = decide_guard("iter2", None, 97.0, earlier, ADDED, KPI)
    assert missed is not None and "missed the recall constraint" in missed.words()


def test_no_decision_when_not_worse_or_nothing_to_compare_with() -> None:
    assert decide_guard("iter2", 1.0, 100.0, [("baseline", 4.3, 100.0), ("iter1", 1.4, 100.0)], ADDED, KPI) is None
    assert decide_guard("iter1", 50.0, 100.0, [("baseline", None, 90.0)], ADDED, KPI) is None


def test_decision_survives_the_state_round_trip() -> None:
    decision = decide_guard("iter2", 7.1, 100.0, [("iter1", 1.4, 100.0)], ADDED, KPI)
    assert decision is not None
    assert type(decision).model_validate_json(decision.model_dump_json()) == decision


def test_set_aside_by_marks_rows_of_earlier_gates_first_gate_wins() -> None:
    base = rows(("x", "PASS", "real", NO_TARGET), ("y", "short", "real", NO_TARGET))
    combined = pd.concat([base, ADDED], ignore_index=True)[list(CHANGENET_COLUMNS)]
    # key fields normalised as the leakage key compares them (label case, trailing slash)
    later = ADDED.iloc[[4]].assign(label="short", input_path=lambda d: d["input_path"] + "/")
    aside = set_aside_by(combined, {"iter1": ADDED.iloc[[0, 2]], "iter2": pd.concat([ADDED.iloc[[2]], later])})
    assert aside.tolist() == ["", "", "iter1", "", "iter1", "", "iter2"]
    assert set_aside_by(combined, {}).tolist() == [""] * len(combined)
    assert set_aside_by(combined.iloc[0:0], {"iter1": ADDED}).tolist() == []
