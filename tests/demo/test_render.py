"""Pure pieces: scenes, defects, nuisance, row plans."""

from __future__ import annotations

import numpy as np
import pytest

from deft_aoi.demo.components import KINDS, MULTI_LEAD, TWO_TERMINAL, build_scene
from deft_aoi.demo.defects import COMPATIBLE, DEFECT_TYPES, apply_defect
from deft_aoi.demo.nuisance import Nuisance, apply_nuisance, crop, draw_nuisance, gaussian_blur, to_uint8
from deft_aoi.demo.render import render_scene
from deft_aoi.demo.samples import render_pair, render_synthetic
from deft_aoi.demo.scene import CANVAS, CROP
from deft_aoi.demo.splits import plan_synthetic, plan_workspace, recipes


def _rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


@pytest.mark.parametrize("comp", list(KINDS))
def test_scene_renders_a_component_on_a_board(comp: str) -> None:
    scene = build_scene(comp, _rng(1))
    img = render_scene(scene)
    assert img.shape == (CANVAS, CANVAS, 3)
    centre = img[CANVAS // 2 - 6 : CANVAS // 2 + 6, CANVAS // 2 - 6 : CANVAS // 2 + 6]
    corner = img[:8, :8]
    # The board is green solder mask; the centre holds the part, which is not.
    assert corner[..., 1].mean() > corner[..., 0].mean() + 20
    assert centre[..., 1].mean() - centre[..., 0].mean() < 10
    assert np.array_equal(render_scene(scene), img), "rendering must be deterministic"


@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_each_defect_changes_the_image(defect: str) -> None:
    comp = COMPATIBLE[defect][0]
    scene = build_scene(comp, _rng(3))
    before = crop(render_scene(scene))
    after = crop(render_scene(apply_defect(scene, defect, _rng(4))))
    diff = np.abs(after - before).max(axis=2)
    assert (diff > 40).sum() >= 4, f"{defect} is not visible"
    assert (diff > 40).mean() < 0.5, f"{defect} changed most of the crop"


def test_missing_removes_the_dark_body() -> None:
    scene = build_scene("resistor", _rng(5))
    dark = lambda img: (img.max(axis=2) < 60).sum()  # noqa: E731
    assert dark(render_scene(scene)) > 100
    assert dark(render_scene(apply_defect(scene, "missing", _rng(6)))) < 10


def test_defect_compatibility_is_enforced() -> None:
    assert set(COMPATIBLE["bridge"]) == set(MULTI_LEAD)
    assert set(COMPATIBLE["tombstone"]) == set(TWO_TERMINAL)
    with pytest.raises(ValueError, match="cannot occur"):
        apply_defect(build_scene("resistor", _rng(1)), "bridge", _rng(2))
    with pytest.raises(ValueError, match="cannot occur"):
        apply_defect(build_scene("ic", _rng(1)), "tombstone", _rng(2))


def test_misregistration_is_a_whole_image_shift() -> None:
    canvas = render_scene(build_scene("ic", _rng(9)))
    base, moved = crop(canvas), crop(canvas, 3, -2)
    assert moved.shape == (CROP, CROP, 3)
    assert np.array_equal(moved[2:, :-3], base[:-2, 3:])
    with pytest.raises(ValueError):
        crop(canvas, 9, 0)


def test_draw_nuisance_follows_the_tags() -> None:
    assert draw_nuisance((), _rng(0)) == Nuisance()
    for seed in range(40):
        n = draw_nuisance(("misregistered",), _rng(seed))
        assert 2 <= max(abs(n.dx), abs(n.dy)) <= 4
        assert n.gain == 1.0 and n.blur_sigma == 0.0
        b = draw_nuisance(("brightness", "blur"), _rng(seed))
        assert (b.dx, b.dy) == (0, 0)
        assert 0.7 <= b.gain <= 0.86 or 1.14 <= b.gain <= 1.31
        assert 0.8 <= b.blur_sigma <= 1.3


def test_blur_and_gain() -> None:
    img = crop(render_scene(build_scene("ic", _rng(2))))
    blurred = gaussian_blur(img, 1.2)
    assert blurred.shape == img.shape
    assert np.abs(np.diff(blurred, axis=1)).mean() < np.abs(np.diff(img, axis=1)).mean()
    assert abs(blurred.mean() - img.mean()) < 1.0
    assert apply_nuisance(img, Nuisance(gain=1.2)).mean() == pytest.approx(img.mean() * 1.2, rel=1e-4)
    assert to_uint8(np.array([-3.0, 300.0, 12.4])).tolist() == [0, 255, 12]


def test_pass_pair_is_close_but_not_identical() -> None:
    test, golden = render_pair("capacitor", "PASS", (), 123)
    assert test.dtype == golden.dtype == np.uint8
    diff = np.abs(test.astype(int) - golden.astype(int))
    assert 0 < diff.mean() < 8
    again = render_pair("capacitor", "PASS", (), 123)
    assert np.array_equal(again[0], test) and np.array_equal(again[1], golden)


def test_misregistered_pass_differs_more_than_clean_pass() -> None:
    clean = [render_pair("ic", "PASS", (), s) for s in range(8)]
    shifted = [render_pair("ic", "PASS", ("misregistered",), s) for s in range(8)]
    err = lambda pairs: np.mean([np.abs(t.astype(int) - g.astype(int)).mean() for t, g in pairs])  # noqa: E731
    assert err(shifted) > 2 * err(clean)


def test_synthetic_pair_shares_everything_but_the_defect() -> None:
    ng, ok = render_synthetic("resistor", "solder_ball", 77)
    changed = np.abs(ng.astype(int) - ok.astype(int)).max(axis=2) > 0
    assert 0 < changed.sum() < 60


def test_plan_respects_recipes_and_is_deterministic() -> None:
    plan = plan_workspace(7, "small")
    for recipe in recipes("small"):
        rows = plan[plan["split"] == recipe.name]
        assert len(rows) == recipe.rows
        assert (rows["label"] == "PASS").sum() == recipe.pass_rows
        assert set(rows["label"]) - {"PASS"} == set(recipe.defect_types)
        for label, comp in zip(rows["label"], rows["comp_type_1"], strict=True):
            assert label == "PASS" or comp in COMPATIBLE[label]
    assert plan.equals(plan_workspace(7, "small"))
    assert not plan["row_seed"].equals(plan_workspace(8, "small")["row_seed"])
    assert plan["row_seed"].is_unique
    medium = plan_workspace(7, "medium")
    assert len(medium) == 4 * len(plan)
    assert len(plan_synthetic(7, "medium")) == 4 * len(plan_synthetic(7, "small"))
