"""The row plan of a demo workspace: which board, pair, component, label and nuisance every row gets.

Pure: (seed, size) in, DataFrames out. Boards are the split unit (every board and every pair belongs to
exactly one split), so no leakage key can repeat across splits. The base training and validation sets
see only BASE_DEFECTS and no nuisance; the KPI set and the mining pool see every defect type and about a
third of their rows carry nuisance; the synthetic pool holds exactly the types base training lacks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from deft_aoi.demo.components import KINDS
from deft_aoi.demo.defects import COMPATIBLE, DEFECT_TYPES
from deft_aoi.demo.nuisance import NUISANCE_TYPES
from deft_aoi.workspace.changenet_csv import CHANGENET_COLUMNS, PASS_LABEL

if TYPE_CHECKING:
    import pandas as pd

Size = Literal["small", "medium"]
SplitName = Literal["train", "validation", "kpi", "mining_pool"]

BASE_DEFECTS: tuple[str, ...] = ("missing", "shift", "bridge")
SYNTH_DEFECTS: tuple[str, ...] = tuple(d for d in DEFECT_TYPES if d not in BASE_DEFECTS)
SCALE: dict[str, int] = {"small": 1, "medium": 4}
PROJECT = "demo"

# Good parts are mostly passives, as on a real board.
PASS_MIX: dict[str, float] = {"resistor": 0.3, "capacitor": 0.3, "diode": 0.1, "transistor": 0.15, "ic": 0.15}


class SplitRecipe(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: SplitName
    rows: int
    pass_rows: int
    defect_types: tuple[str, ...]
    nuisance_frac: float
    path_prefix: str  # mining-pool paths are relative to augmentation/mining_pool, so they start "images/"


def recipes(size: Size) -> tuple[SplitRecipe, ...]:
    k = SCALE[size]
    return (
        SplitRecipe(name="train", rows=150 * k, pass_rows=105 * k, defect_types=BASE_DEFECTS, nuisance_frac=0.0,
                    path_prefix=""),
        SplitRecipe(name="validation", rows=100 * k, pass_rows=70 * k, defect_types=BASE_DEFECTS,
                    nuisance_frac=0.0, path_prefix=""),
        SplitRecipe(name="kpi", rows=350 * k, pass_rows=200 * k, defect_types=DEFECT_TYPES, nuisance_frac=1 / 3,
                    path_prefix=""),
        SplitRecipe(name="mining_pool", rows=1000 * k, pass_rows=600 * k, defect_types=DEFECT_TYPES,
                    nuisance_frac=0.35, path_prefix="images/"),
    )


def synthetic_count(size: Size) -> int:
    return 80 * SCALE[size]


def _even_labels(n: int, types: tuple[str, ...]) -> list[str]:
    base, extra = divmod(n, len(types))
    return [t for i, t in enumerate(types) for _ in range(base + (1 if i < extra else 0))]


def _nuisance_tags(n_rows: int, frac: float, rng: np.random.Generator) -> list[str]:
    """Tags for one label group: round(frac·n) rows get one nuisance, a quarter of those a second one."""
    tags = [""] * n_rows
    chosen = rng.choice(n_rows, size=round(frac * n_rows), replace=False) if n_rows else np.empty(0, dtype=np.int64)
    for i in chosen:
        first = int(rng.integers(len(NUISANCE_TYPES)))
        kinds = {first}
        if rng.random() < 0.25:
            kinds.add(int((first + 1 + rng.integers(len(NUISANCE_TYPES) - 1)) % len(NUISANCE_TYPES)))
        tags[int(i)] = ";".join(NUISANCE_TYPES[j] for j in sorted(kinds))
    return tags


def _comp_types(labels: list[str], rng: np.random.Generator) -> list[str]:
    kinds = list(PASS_MIX)
    weights = np.array([PASS_MIX[k] for k in kinds])
    out = []
    for label in labels:
        if label == PASS_LABEL:
            out.append(kinds[int(rng.choice(len(kinds), p=weights))])
        else:
            allowed = COMPATIBLE[label]
            out.append(allowed[int(rng.integers(len(allowed)))])
    return out


def _chunks(n: int, lo: int, hi: int, rng: np.random.Generator) -> list[int]:
    sizes = []
    while n > 0:
        k = min(int(rng.integers(lo, hi + 1)), n)
        sizes.append(k)
        n -= k
    return sizes


def _row_seed(seed: int, stream: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1, np.uint64)[0])


def plan_split(recipe: SplitRecipe, seed: int, stream: int, first_board: int) -> pd.DataFrame:
    """Rows of one split with internal columns (comp_type, pair, nuisance, row_seed) beside the CSV ones."""
    import pandas as pd

    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, stream])))
    defect_rows = recipe.rows - recipe.pass_rows
    labels = [PASS_LABEL] * recipe.pass_rows + _even_labels(defect_rows, recipe.defect_types)
    tags = _nuisance_tags(recipe.pass_rows, recipe.nuisance_frac, rng) + _nuisance_tags(
        defect_rows, recipe.nuisance_frac, rng
    )
    comps = _comp_types(labels, rng)
    order = rng.permutation(recipe.rows)
    labels = [labels[i] for i in order]
    tags = [tags[i] for i in order]
    comps = [comps[i] for i in order]

    boards, pairs, objects = [], [], []
    pair_sizes = _chunks(recipe.rows, 6, 12, rng)
    board_sizes = _chunks(len(pair_sizes), 2, 4, rng)
    pair_index = start = 0
    for b, n_pairs in enumerate(board_sizes):
        board = f"BRD{first_board + b:04d}"
        for panel in range(n_pairs):
            pair = f"{board}_P{panel + 1:02d}"
            members = range(start, start + pair_sizes[pair_index])
            start += len(members)
            # Reference designators are unique within a pair (one inspection of one board).
            numbers = rng.choice(np.arange(1, 400), size=len(members), replace=False)
            for row, number in zip(members, numbers, strict=True):
                boards.append(board)
                pairs.append(pair)
                objects.append(f"{KINDS[comps[row]].prefix}{int(number)}")
            pair_index += 1
    part_types = [KINDS[c].part_types[int(rng.integers(len(KINDS[c].part_types)))] for c in comps]
    prefix = recipe.path_prefix
    frame = pd.DataFrame(
        {
            "input_path": [f"{prefix}{p}/test" for p in pairs],
            "golden_path": [f"{prefix}{p}/golden" for p in pairs],
            "label": labels,
            "object_name": objects,
            "project": PROJECT,
            "boardname": boards,
            "comp_type_2": [KINDS[c].package for c in comps],
            "mpass_mfail": "",
            "is_valid": "",
            "comp_name": objects,
            "part_type": part_types,
            "number_of_pins": [str(KINDS[c].pins) for c in comps],
            "description": [f"nuisance={t}" if t else "" for t in tags],
            "comp_type_1": comps,
            "split": recipe.name,
            "pair": pairs,
            "nuisance": tags,
            "row_seed": [_row_seed(seed, stream, i) for i in range(recipe.rows)],
        }
    )
    return frame


def plan_workspace(seed: int, size: Size) -> pd.DataFrame:
    """Every real row of the workspace, split after split, boards numbered globally so none repeats."""
    import pandas as pd

    frames = []
    next_board = 1
    for stream, recipe in enumerate(recipes(size), start=1):
        frame = plan_split(recipe, seed, stream, next_board)
        next_board += frame["boardname"].nunique()
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def plan_synthetic(seed: int, size: Size) -> pd.DataFrame:
    """Synthetic NG/OK pairs: stem, defect_type, comp_type, row_seed (only types base training lacks)."""
    import pandas as pd

    n = synthetic_count(size)
    stream = 100
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, stream])))
    defects = [SYNTH_DEFECTS[i] for i in rng.permutation(np.arange(n) % len(SYNTH_DEFECTS))]
    comps = _comp_types(defects, rng)
    return pd.DataFrame(
        {
            "stem": [f"sdg_{i:05d}" for i in range(n)],
            "defect_type": defects,
            "comp_type": comps,
            "row_seed": [_row_seed(seed, stream, i) for i in range(n)],
        }
    )


def csv_frame(plan: pd.DataFrame) -> pd.DataFrame:
    """The 14 ChangeNet columns of planned rows (internal columns dropped)."""
    return plan[list(CHANGENET_COLUMNS)].reset_index(drop=True)
