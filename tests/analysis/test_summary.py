from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from deft_aoi.analysis.summary import MAX_WORDS, iteration_summary, word_count, write_iteration_summary
from deft_aoi.config import KpiTarget

KPI = KpiTarget.parse("FAR<10%@recall=100%")


def _summary(**over: object) -> str:
    args: dict = dict(iteration="iter2", far_before=52.0, far_after=8.5, threshold=0.31, kpi=KPI, rows_before=179,
                      rows_added=40, mined_real=30, mined_synthetic=10, target_defects=["open", "short"],
                      support_note=None, next_action="stop: KPI met")
    args.update(over)
    return iteration_summary(**args)


def test_summary_content() -> None:
    text = _summary()
    assert text.startswith("# iter2 summary")
    assert "**met**" in text and "52.00% → 8.50% (-43.50 pp)" in text
    assert "179 + 40 added = 219" in text and "30 real, 10 synthetic" in text
    assert "open, short" in text and "0.3100" in text and "**Next:** stop: KPI met" in text


def test_summary_not_met_and_unmeasured() -> None:
    assert "**not met**" in _summary(far_after=11.0)
    text = _summary(far_after=None, threshold=None)
    assert "**not measured**" in text and "n/a" in text


_words = st.lists(st.text(alphabet="abcdefgh- ", min_size=1, max_size=30), max_size=200)


@settings(max_examples=25, deadline=None)
@given(_words, st.text(max_size=3000), st.text(max_size=3000))
def test_summary_never_exceeds_300_words(defects: list[str], note: str, action: str) -> None:
    text = _summary(target_defects=defects, support_note=note or None, next_action=action)
    assert word_count(text) <= MAX_WORDS


def test_long_inputs_are_clipped_not_dropped() -> None:
    text = _summary(target_defects=[f"defect-{i}" for i in range(40)], support_note="word " * 500,
                    next_action="mine more " * 200)
    assert word_count(text) <= MAX_WORDS
    assert "(+28 more)" in text and "**Support**" in text and "…" in text


def test_write_iteration_summary(tmp_path: Path) -> None:
    path = write_iteration_summary(tmp_path, "iter1", _summary(iteration="iter1"))
    assert path == tmp_path / "iter1_summary.md" and path.read_text().startswith("# iter1 summary")


def test_summary_states_error_bars_setters_and_selection() -> None:
    from deft_aoi.analysis.summary import selection_words

    text = _summary(ci_before=(40.0, 60.0), ci_after=(5.0, 20.0), far99_after=4.0,
                    threshold_defects=[{"label": "open", "row": 17, "score": 0.2}],
                    selection=selection_words(n_pass=30, n_defect=10, share_permille=55, pool_rows=1833))
    assert "[40.00, 60.00]% → [5.00, 20.00]%: significant" in text
    assert "**FAR@recall99** 4.00%" in text and "open row 17 (score 0.2000)" in text
    assert "30 PASS, 10 defect rows added (PASS : defect = 3.00 : 1); 5.5% of the 1833-row pool" in text
    overlapping = _summary(ci_before=(10.0, 30.0), ci_after=(20.0, 40.0))
    assert "not significant" in overlapping
    assert word_count(overlapping) <= MAX_WORDS
