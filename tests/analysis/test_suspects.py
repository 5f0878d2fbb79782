"""Suspect labels (analysis/suspects.py): model AND neighbours disagree with the label."""

from __future__ import annotations

import numpy as np
import pandas as pd

from deft_aoi.analysis.suspects import confident_disagreement, find_suspects, neighbour_other_share


def test_confident_disagreement_uses_per_class_thresholds() -> None:
    is_defect = np.array([False, False, False, True, True, True])
    scores = np.array([0.1, 0.2, 0.35, 0.3, 0.4, 0.05])
    # t_defect = mean(0.3, 0.4, 0.05) = 0.25 → the PASS row at 0.35 is confidently a defect;
    # t_pass = mean(0.9, 0.8, 0.65) = 0.783 → the defect at 0.05 (PASS prob 0.95) is confidently PASS.
    assert confident_disagreement(is_defect, scores).tolist() == [False, False, True, False, False, True]
    # A weak model scoring everything low still finds its relative outliers (not 0.5 cut-offs).
    assert not confident_disagreement(np.array([False, True]), np.array([0.1, 0.2])).any()


def test_neighbour_share_excludes_the_row_itself() -> None:
    emb = np.array([[1.0, 0.0], [0.99, 0.1], [0.98, 0.2], [0.0, 1.0], [0.1, 0.99]])
    labels = np.array([True, False, False, False, False])
    share = neighbour_other_share(emb, emb, labels, labels, k=2, self_index=np.arange(5))
    assert share[0] == 1.0  # both nearest OTHER rows are PASS
    assert share[3] == 0.0  # row 3's neighbours (4 and 2) are PASS like it
    assert share[1] == 0.5  # rows 0 (defect) and 2 (PASS)


def test_find_suspects_needs_both_signals_and_marks_the_threshold_setter() -> None:
    frame = pd.DataFrame({"label": ["PASS", "PASS", "open", "open"], "object_name": ["a", "b", "c", "d"]})
    is_defect = np.array([False, False, True, True])
    scores = np.array([0.9, 0.8, 0.1, 0.95])
    other = np.array([0.8, 0.2, 0.6, 0.0])
    out = find_suspects(frame, is_defect, scores, other, threshold_rows=[4])
    # Row 2 (a): model and neighbours disagree. Row 3 (b): model only. Row 4 (c): both; sets the threshold.
    assert out["row"].tolist() == [4, 2] and out["sets_threshold"].tolist() == [True, False]
    assert out["object_name"].tolist() == ["c", "a"]


def test_training_suspects_name_their_set_and_never_set_the_threshold() -> None:
    from deft_aoi.analysis.suspects import KPI_SET, TRAINING_SET, combine_suspects

    kpi = find_suspects(pd.DataFrame({"label": ["PASS", "open"]}), np.array([False, True]),
                        np.array([0.9, 0.1]), np.array([0.8, 0.8]), threshold_rows=[3])
    train = find_suspects(pd.DataFrame({"label": ["open", "PASS", "PASS"]}), np.array([True, False, False]),
                          np.array([0.02, 0.1, 0.05]), np.array([1.0, 0.0, 0.0]), threshold_rows=[2],
                          set_name=TRAINING_SET)
    # The defect at training row 2 scores below every PASS mean and its neighbours are PASS: flagged, but the
    # recall-100 % threshold is a KPI fact, so a training row number never marks it.
    assert train[["set", "row", "sets_threshold"]].values.tolist() == [[TRAINING_SET, 2, False]]
    both = combine_suspects(kpi, train)
    assert both["set"].tolist() == [KPI_SET, KPI_SET, TRAINING_SET]
    assert both["sets_threshold"].tolist() == [True, False, False]
    assert combine_suspects(kpi, None).equals(kpi.reset_index(drop=True))
    assert combine_suspects(kpi.head(0), train)["set"].tolist() == [TRAINING_SET]
