"""One planned row → its image pair (pure: a seed in, uint8 arrays out).

golden = clean reference render of the nominal component; test = the same board area with process
variation, the row's defect, its nuisance and sensor noise. A synthetic pair is an OK capture and the
same capture with a defect painted in (identical noise outside the defect, as a generator's output is).
"""

from __future__ import annotations

import numpy as np

from deft_aoi.demo.components import build_scene
from deft_aoi.demo.defects import apply_defect, process_variation
from deft_aoi.demo.nuisance import apply_nuisance, crop, draw_nuisance, sensor_noise, to_uint8
from deft_aoi.demo.render import render_board, render_scene
from deft_aoi.workspace.changenet_csv import PASS_LABEL


def row_rng(row_seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(row_seed))


def render_pair(comp_type: str, label: str, tags: tuple[str, ...], row_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(test, golden) as CROP×CROP×3 uint8 arrays."""
    rng = row_rng(row_seed)
    scene = build_scene(comp_type, rng)
    board = render_board(scene)
    golden = to_uint8(crop(render_scene(scene, board)))
    test_scene = process_variation(scene, rng)
    if label != PASS_LABEL:
        test_scene = apply_defect(test_scene, label, rng)
    nuisance = draw_nuisance(tags, rng)
    test = crop(render_scene(test_scene, board), nuisance.dx, nuisance.dy)
    test = sensor_noise(apply_nuisance(test, nuisance), rng)
    return to_uint8(test), golden


def render_synthetic(comp_type: str, defect: str, row_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(ng, ok) as CROP×CROP×3 uint8 arrays sharing one noise field."""
    rng = row_rng(row_seed)
    scene = process_variation(build_scene(comp_type, rng), rng)
    defective = apply_defect(scene, defect, rng)
    board = render_board(scene)
    ok = crop(render_scene(scene, board))
    noise = sensor_noise(np.zeros_like(ok), rng)
    ng = crop(render_scene(defective, board)) + noise
    return to_uint8(ng), to_uint8(ok + noise)
