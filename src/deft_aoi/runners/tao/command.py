"""THE parser of a TAO command line: `<program> <command> -e <spec.yaml> [key=value ...]`.

Every reader of a TAO job (the local backend, the fake TAO, the stand-in image, tests) parses argv here, into one
typed `TaoCommand`; `load_changenet` adds the spec with the overrides applied and the job's `results_dir`.
`commands.py` builds the argv this module reads (its quoting is undone by `parse_value`).

The results_dir rule is TAO's own `update_results_dir(cfg, task)` (NVIDIA/tao_pytorch_backend
`nvidia_tao_pytorch/core/utilities.py` @1e6c9392, applied to every Visual ChangeNet task by the
`monitor_status(mode=<task>)` decorator of `nvidia_tao_pytorch/core/decorators/workflow.py`): a non-empty
`<task>.results_dir` wins; else a non-empty `results_dir` gets `/<task>` appended; else TAO raises
"You need to set at least one of following fields: results_dir, {mode}.results_dir".
"""

from __future__ import annotations

import copy
import posixpath
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from deft_aoi.dotted import get_dotted, set_dotted
from deft_aoi.errors import UsageError

ChangeNetTask = Literal["train", "inference", "evaluate", "export"]
CHANGENET_TASKS: tuple[str, ...] = ("train", "inference", "evaluate", "export")
ENTRYPOINT = "visual_changenet"
SPEC_FLAGS = ("-e", "--experiment_spec_file", "--experiment-spec-file")
_KEY = re.compile(r"^[A-Za-z_][\w.]*$")
# PyYAML's YAML 1.1 resolver leaves "1e-4" a string; Hydra (YAML 1.2 floats) reads it as a float.
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class TaoCommand(BaseModel):
    """One parsed TAO command line. `overrides` keep their order (a later key wins, as in Hydra)."""

    model_config = ConfigDict(frozen=True)

    words: tuple[str, ...]
    spec_path: str
    overrides: tuple[tuple[str, Any], ...]

    @property
    def program(self) -> str:
        return Path(self.words[0]).name if self.words else ""

    @property
    def command(self) -> str:
        """The sub-command: `train` of `visual_changenet train`, `nearest_neighbors` of `tmm nearest_neighbors`."""
        return self.words[1] if len(self.words) > 1 else ""

    def override_dict(self) -> dict[str, Any]:
        return dict(self.overrides)


class ChangeNetCommand(BaseModel):
    """A Visual ChangeNet job: its command line, the spec with the overrides applied (`doc`: interpolations as
    written; `resolved`: the same keys with `${...}` resolved over TAO's defaults, as TAO reads them) and the
    directory TAO writes into (from the resolved keys)."""

    model_config = ConfigDict(frozen=True)

    command: TaoCommand
    task: ChangeNetTask
    doc: dict[str, Any]
    resolved: dict[str, Any]
    results_dir: str

    def get(self, dotted: str, default: Any = None) -> Any:
        return get_dotted(self.doc, dotted, default)


def parse_value(text: str) -> Any:
    """An override value as Hydra reads it: a quoted string is unquoted (backslash escapes undone), anything else
    is a YAML scalar ("1e-4" → float, "null" → None, "[1, 5]" → list); text YAML cannot parse stays a string."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and _FLOAT.match(value):
        return float(value)
    return value


def parse_overrides(tokens: Sequence[str]) -> tuple[tuple[str, Any], ...]:
    """`key=value` tokens → ordered (dotted key, typed value); Hydra's `+key=value` (add a key) means the same."""
    out: list[tuple[str, Any]] = []
    for token in tokens:
        key, sep, value = token.partition("=")
        key = key.strip().lstrip("+")
        if not sep or not _KEY.match(key):
            raise UsageError(f"TAO command line: {token!r} is not a key=value override")
        out.append((key, parse_value(value)))
    return tuple(out)


def parse_command(argv: Sequence[str]) -> TaoCommand:
    """`<program> <command> -e <spec> [key=value ...]` (also `-e=<spec>`, `--experiment_spec_file <spec>`)."""
    args = list(argv)
    words: list[str] = []
    while args and not args[0].startswith("-") and "=" not in args[0]:
        words.append(args.pop(0))
    spec: str | None = None
    tokens: list[str] = []
    while args:
        arg = args.pop(0)
        if arg in SPEC_FLAGS:
            if not args:
                raise UsageError(f"TAO command line: {arg} needs a spec file path: {' '.join(argv)}")
            spec = args.pop(0)
        elif arg.startswith("-e="):
            spec = arg[3:]
        elif arg.startswith("-"):
            raise UsageError(f"TAO command line: unexpected argument {arg!r} (want key=value overrides)")
        else:
            tokens.append(arg)
    if not words:
        raise UsageError(f"TAO command line has no program: {' '.join(argv)!r}")
    if spec is None:
        raise UsageError(f"TAO command line has no '-e <spec>': {' '.join(argv)}")
    return TaoCommand(words=tuple(words), spec_path=spec, overrides=parse_overrides(tokens))


def apply_overrides(doc: dict[str, Any], overrides: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """A deep copy of `doc` with each dotted `key=value` set, creating intermediate mappings."""
    out = copy.deepcopy(doc)
    for dotted, value in overrides:
        set_dotted(out, dotted, value)
    return out


def results_dir(doc: dict[str, Any], task: str) -> str:
    """Where TAO writes a `task` job of spec `doc` (TAO's update_results_dir, see the module docstring)."""
    own = get_dotted(doc, f"{task}.results_dir")
    if own:
        return str(own)
    shared = get_dotted(doc, "results_dir")
    if shared:
        return posixpath.join(str(shared), task)
    raise UsageError(f"You need to set at least one of following fields: results_dir, {task}.results_dir")


def changenet_command(argv: Sequence[str], doc: dict[str, Any]) -> ChangeNetCommand:
    """`visual_changenet <task> -e <spec> k=v...` over the already loaded spec `doc` (as written, unresolved).
    Overrides apply before interpolations resolve, as in Hydra."""
    command = parse_command(argv)
    if command.program != ENTRYPOINT or command.command not in CHANGENET_TASKS:
        raise UsageError(f"expected `{ENTRYPOINT} {{{','.join(CHANGENET_TASKS)}}} -e SPEC`, got {' '.join(argv)!r}")
    from deft_aoi.runners.tao.changenet_spec import resolve_spec

    merged = apply_overrides(doc, command.overrides)
    resolved = resolve_spec(merged, source=command.spec_path)
    task = command.command
    return ChangeNetCommand(command=command, task=task, doc=merged, resolved=resolved,  # type: ignore[arg-type]
                            results_dir=results_dir(resolved, task))


def load_changenet(argv: Sequence[str], *, workdir: Path | None = None) -> ChangeNetCommand:
    """Parse `argv`, then read the spec it names (relative to `workdir`) as TAO does (OmegaConf)."""
    from deft_aoi.runners.tao.changenet_spec import load_spec_document

    spec = Path(parse_command(argv).spec_path)
    return changenet_command(argv, load_spec_document(workdir / spec if workdir is not None else spec))
