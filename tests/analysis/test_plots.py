"""The hand-written SVG charts: well-formed, deterministic, and showing what they claim."""

from __future__ import annotations

from xml.etree import ElementTree

import numpy as np
import pandas as pd

from deft_aoi.analysis.kpi import threshold_sweep
from deft_aoi.analysis.plots import MAX_POINTS, far_recall_svg, score_histogram_svg, trend_svg

NS = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ElementTree.Element:
    root = ElementTree.fromstring(svg)
    assert root.tag == f"{NS}svg"
    return root


def texts(root: ElementTree.Element) -> str:
    return " ".join(t.text or "" for t in root.iter(f"{NS}text"))


def test_histogram_has_one_series_per_label_and_the_threshold() -> None:
    df = pd.DataFrame({"label": ["PASS", "PASS", "open", "short<&>"], "siamese_score": [0.1, 0.2, 0.8, 0.9]})
    svg = score_histogram_svg(df, 0.5)
    root = parse(svg)  # the label with XML metacharacters is escaped
    assert len(root.findall(f"{NS}polyline")) == 3
    assert "threshold 0.5" in texts(root)
    assert "short<&> (n=1)" in texts(root)
    assert svg == score_histogram_svg(df, 0.5)


def test_histogram_without_threshold_or_rows() -> None:
    root = parse(score_histogram_svg(pd.DataFrame({"label": [], "siamese_score": []}), None))
    assert not root.findall(f"{NS}polyline")


def test_far_recall_marks_recall_100_and_thins_big_sweeps() -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    is_defect = rng.random(n) < 0.3
    scores = np.where(is_defect, rng.random(n) * 0.6 + 0.4, rng.random(n) * 0.7)
    sweep = threshold_sweep(is_defect, scores)
    root = parse(far_recall_svg(sweep))
    line = root.find(f"{NS}polyline")
    assert line is not None
    assert len(line.attrib["points"].split()) <= MAX_POINTS + 1
    assert "FAR@recall100" in texts(root)


def test_far_recall_label_is_the_kpi_far() -> None:
    sweep = threshold_sweep(np.array([False, False, False, False, True]), np.array([0.1, 0.2, 0.3, 0.9, 0.5]))
    words = texts(parse(far_recall_svg(sweep)))
    assert "FAR@recall100 = 25%" in words  # only the PASS at 0.9 is above the threshold 0.3
    reordered = sweep.iloc[::-1].reset_index(drop=True)
    assert "FAR@recall100 = 25%" in texts(parse(far_recall_svg(reordered)))


def test_far_recall_undefined_without_both_classes() -> None:
    sweep = threshold_sweep(np.zeros(3, dtype=bool), np.array([0.1, 0.2, 0.3]))
    assert "undefined" in texts(parse(far_recall_svg(sweep)))


def test_trend_draws_far_threshold_and_target_with_gaps() -> None:
    points = [("baseline", 52.0, 0.31), ("iter1", None, None), ("iter2", 8.5, 0.42), ("iter3", 2.0, 0.47)]
    root = parse(trend_svg(points, 0.1))
    words = texts(root)
    assert "target 0.1%" in words and "baseline" in words and "iter3" in words
    # Each series breaks at the missing iteration: one 2-point polyline each (the lone baseline is a dot).
    assert len(root.findall(f"{NS}polyline")) == 2
    assert len(root.findall(f"{NS}circle")) == 6
    assert trend_svg([], None).startswith("<svg")
