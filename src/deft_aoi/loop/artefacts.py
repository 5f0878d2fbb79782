"""Finding and hashing a run's artefacts through the run catalog (workspace/catalog.py).

A stage-scope artefact lives in the output dir its writer recorded in the state, so readers (stages, the
report, status, benches, tests) ask here instead of guessing globs. The engine hashes every declared input
and output into `.stage.json` at commit (`hash_artefacts`); resume trusts a committed stage only while its
outputs still hash as recorded (`changed_outputs`), the generic form of DVC's stage lock check.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from pathlib import Path

from deft_aoi.io_utils import sha256_file
from deft_aoi.loop.state import ArtefactRecord, IterationState, RunState
from deft_aoi.workspace.catalog import CATALOG, CHECKPOINT_KINDS, STAGE_DIRS, Artefact, artefact, checkpoint_key
from deft_aoi.workspace.iterations import is_baseline, iteration_index
from deft_aoi.workspace.layout import RunLayout, WorkspaceLayout

# The commit record sits inside the dirs it describes: it is never part of their hash.
STAGE_RECORD_NAME = artefact("stage.record").path


def fields_of(iteration: str) -> dict[str, object]:
    """The template fields of an iteration's artefact names ({iteration}, {index})."""
    return {"iteration": iteration, "index": iteration_index(iteration)}


def path_in(art: Artefact, run: RunLayout, stage_dir: str | Path, iteration: str) -> Path:
    """Where `art` of `iteration` is, given its writer's output dir (relative to the run dir, or absolute)."""
    base = run.root if art.scope == "run" else run.root / stage_dir
    return art.at(base, **fields_of(iteration))


def find(run: RunLayout, state: RunState, key: str, iteration: str, *, walk_back: bool = True,
         committed_only: bool = True) -> Path | None:
    """The path of `key` written in `iteration` (or, with `walk_back`, the latest earlier iteration whose
    writer committed), from the writer's recorded output dir; None when no such stage committed.
    `committed_only=False` also takes a failed stage's dir (a hard stop keeps what it wrote, for people)."""
    art = artefact(key)
    if art.writer not in STAGE_DIRS:  # written at the start of the run (or by the engine): one per run
        return art.at(run.root, **fields_of(iteration))
    for it in _iterations_from(state, iteration) if walk_back else [state.iterations.get(iteration)]:
        if it is None:
            continue
        rec = it.stages.get(art.writer)
        if rec is not None and rec.output_dir is not None and (rec.status == "complete" or not committed_only):
            return path_in(art, run, rec.output_dir, it.name)
    return None


def _iterations_from(state: RunState, iteration: str) -> list[IterationState]:
    ordered = state.ordered_iterations()
    names = [it.name for it in ordered]
    if iteration not in names:
        return []
    return list(reversed(ordered[: names.index(iteration) + 1]))


def checkpoint_file(link: Path) -> Path:
    """The file a checkpoint artefact names: a link's target (its path as the link spells it, `..` folded, so a
    job sees the path TAO wrote), or `link` itself when it is a plain file (a workspace copied without links)."""
    if not link.is_symlink():
        return link
    return Path(os.path.normpath(link.parent / os.readlink(link)))


def link_checkpoint(link: Path, target: Path, *, relative_under: Path) -> None:
    """Make checkpoint artefact `link` name `target`: relative when both lie under `relative_under` (the train
    stage's dir; the workspace for a seeded checkpoint), so a moved or copied run still finds it; absolute else.
    Idempotent (a re-attached train stage runs again over its dir)."""
    inside = relative_under in target.parents and relative_under in link.parents
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent) if inside else target)


def checkpoint(run: RunLayout, state: RunState, iteration: str, kind: str) -> Path | None:
    """Checkpoint `kind` (CHECKPOINT_KINDS) of `iteration`: the file its catalog artefact names, or, for a train
    stage recorded before checkpoints were artefacts, the path it recorded. None before that train committed."""
    it = state.iterations.get(iteration)
    if it is None:
        return None
    if it.recorded_checkpoints:
        recorded = it.recorded_checkpoints.get(kind)
        return Path(recorded) if recorded else None
    link = find(run, state, checkpoint_key(kind), iteration, walk_back=False)
    return None if link is None else checkpoint_file(link)


def checkpoints(run: RunLayout, state: RunState, iteration: str) -> dict[str, Path]:
    """Checkpoint kind → file, for the kinds `iteration`'s train stage wrote (runs before best_far have two)."""
    return {kind: path for kind in CHECKPOINT_KINDS if (path := checkpoint(run, state, iteration, kind)) is not None}


def chosen_checkpoint(run: RunLayout, state: RunState, iteration: str) -> Path | None:
    """The checkpoint `iteration`'s evaluate stage chose (the kind it recorded); None before it chose."""
    it = state.iterations.get(iteration)
    if it is None or it.chosen_checkpoint is None:
        return None
    return checkpoint(run, state, iteration, it.chosen_checkpoint)


def inference_csvs(run: RunLayout, state: RunState, iteration: str) -> dict[str, Path]:
    """Checkpoint kind → the inference CSV that scored it. The inference stage scores each checkpoint once,
    under the first kind naming it; a later kind naming the same checkpoint points there."""
    out: dict[str, Path] = {}
    for kind in CHECKPOINT_KINDS:
        path = find(run, state, f"inference.{kind}", iteration, walk_back=False)
        if path is not None and path.is_file():
            out[kind] = path
    files = checkpoints(run, state, iteration)
    for kind in CHECKPOINT_KINDS:
        if kind in out:
            continue
        twin = next((k for k in CHECKPOINT_KINDS if k in out and k in files and files[k] == files.get(kind)), None)
        if twin is not None:
            out[kind] = out[twin]
        elif kind == "latest" and "best_val" in out:  # a state without its checkpoints: today's pair
            out[kind] = out["best_val"]
    return out


def chosen_inference_csv(run: RunLayout, state: RunState, it: IterationState) -> Path | None:
    """The inference CSV of the checkpoint the evaluate stage chose (best_val before it has chosen)."""
    csvs = inference_csvs(run, state, it.name)
    return csvs.get(it.chosen_checkpoint or "best_val") or next(iter(csvs.values()), None)


def training_csv(ws: WorkspaceLayout, run: RunLayout, state: RunState, iteration: str, *,
                 assembled: bool = False) -> Path | None:
    """The CSV `iteration` trains on: the workspace's for the baseline, else that iteration's fine-tune set
    when its assembly wrote one (`fine_tune_set`), else its assembled CSV; `assembled=True`: always the
    assembled, monotonic CSV. None before its assemble stage committed."""
    if is_baseline(iteration):
        return ws.train_csv
    combined = find(run, state, "assemble.train_csv", iteration, walk_back=False)
    if assembled or combined is None:
        return combined
    return fine_tune_set(combined, find(run, state, "assemble.finetune_csv", iteration, walk_back=False))


def fine_tune_set(combined: Path, finetune: Path | None) -> Path:
    """What an iteration's train job reads: `assemble.finetune_csv` (the assembled rows less those earlier gates
    set aside, analysis/guard.py) when the assembly wrote it (it does only when a gate set rows aside), else the
    assembled CSV `combined`."""
    return finetune if finetune is not None and finetune.is_file() else combined


def digest(path: Path, exclude: tuple[str, ...] = (), memo: dict[str, tuple[str, int]] | None = None
           ) -> tuple[str, int]:
    """(sha256, size) of a file; for a dir, of its sorted file list with sizes and file hashes (files whose name or
    path inside the dir matches an `exclude` glob left out). `memo` (real path → digest) hashes a file reached
    twice in one record once: two checkpoint kinds often link one checkpoint."""
    memo = {} if memo is None else memo
    if path.is_file():
        return _file_digest(path, memo)
    skip = (STAGE_RECORD_NAME, *exclude)
    lines, total = [], 0
    for item in sorted(p for p in path.rglob("*") if p.is_file() and not any(
            fnmatch.fnmatch(p.name, pat) or fnmatch.fnmatch(p.relative_to(path).as_posix(), pat) for pat in skip)):
        sha, size = _file_digest(item, memo)
        lines.append(f"{item.relative_to(path).as_posix()}\t{size}\t{sha}\n")
        total += size
    return hashlib.sha256("".join(lines).encode()).hexdigest(), total


def _file_digest(path: Path, memo: dict[str, tuple[str, int]]) -> tuple[str, int]:
    real = os.path.realpath(path)
    if real not in memo:
        memo[real] = sha256_file(path), path.stat().st_size
    return memo[real]


def hash_artefacts(paths: dict[str, Path], run_root: Path, *, shown_at: dict[Path, Path] | None = None
                   ) -> dict[str, dict[str, object]]:
    """Catalog key → {path (relative to the run dir), sha256, size} for every path that exists.

    `shown_at` maps a dir being hashed (a stage's scratch dir) to where it will be committed, so the record
    names the final place."""
    out: dict[str, dict[str, object]] = {}
    memo: dict[str, tuple[str, int]] = {}
    for key, path in paths.items():
        if not path.exists():
            continue
        sha, size = digest(path, artefact(key).exclude, memo)
        out[key] = {"path": _relative(_moved(path, shown_at or {}), run_root), "sha256": sha, "size": size}
    return out


def _moved(path: Path, shown_at: dict[Path, Path]) -> Path:
    for src, dest in shown_at.items():
        if path == src or src in path.parents:
            return dest / path.relative_to(src)
    return path


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def changed_outputs(run: RunLayout, state: RunState) -> list[str]:
    """Committed outputs that no longer hash as recorded (missing, edited, replaced), as
    "<iteration> · <stage>: <key> (<path>)". Stages recorded before hashes existed have none: trusted."""
    changed = []
    for it in state.ordered_iterations():
        for stage, rec in it.stages.items():
            if rec.status != "complete":
                continue
            for key, recorded in rec.outputs.items():
                art = CATALOG.get(key)
                if art is not None and not art.checked:
                    continue
                if not _still(run.root / recorded.path, recorded, art.exclude if art else ()):
                    changed.append(f"{it.name} · {stage}: {key} ({recorded.path})")
    return changed


def _still(path: Path, recorded: ArtefactRecord, exclude: tuple[str, ...]) -> bool:
    if not path.exists():
        return False
    if recorded.size is not None and path.is_file() and path.stat().st_size != recorded.size:
        return False  # cheap first: a size change needs no hash
    return digest(path, exclude)[0] == recorded.sha256


def declared(stage: object, attr: str) -> tuple[str, ...]:
    """A stage's declared catalog keys (`reads` / `writes`); a stage that declares none has ()."""
    keys = tuple(getattr(stage, attr, ()))
    for key in keys:
        artefact(key)  # an unknown key is a programming error: fail loudly, at the first use
    return keys
