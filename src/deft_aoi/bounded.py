"""Size and depth bounds of every parse of a file a user or a crash can hand deft (YAML specs, JSON state).

A YAML alias bomb (billion laughs: ten aliases of ten aliases of ...) is a few hundred bytes that expand into
a billion nodes when constructed; a few thousand nested brackets blow Python's recursion limit in the parser
or in any recursive walk after it. Both are refused BEFORE construction, by the one rule here, with a message
naming the file and line, instead of an hours-long parse or an internal error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deft_aoi.errors import InputError

# A spec, versions.yaml or a state file is a few hundred nodes, nested under 10 levels; these bounds are
# far above any real one and far below what hurts.
MAX_DEPTH = 64
MAX_NODES = 200_000  # after alias expansion
MAX_BYTES = 16 * 2**20


def check_yaml_bounds(text: str, *, file: str | Path | None = None) -> None:
    """InputError when `text` nests deeper than MAX_DEPTH or expands (aliases counted each time they are
    used) to more than MAX_NODES nodes. Reads the event stream only: PyYAML's parser is iterative, so this
    never recurses nor builds anything; a syntax error is left to the real parse (it names the line)."""
    import yaml

    if len(text) > MAX_BYTES:
        raise InputError(f"file is {len(text) / 2**20:.0f} MB; a YAML file deft reads is at most "
                         f"{MAX_BYTES // 2**20} MB", file=file)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    sizes: dict[str, int] = {}  # anchor → nodes it expands to
    stack: list[list[Any]] = [[None, 0]]  # [anchor of the open collection, nodes inside it so far]
    total = 0
    try:
        for event in yaml.parse(text, Loader=loader):
            line = getattr(getattr(event, "start_mark", None), "line", -1) + 1
            if isinstance(event, yaml.AliasEvent):
                grows = sizes.get(str(event.anchor), 1)
            elif isinstance(event, yaml.ScalarEvent):
                grows = 1
                if event.anchor:
                    sizes[str(event.anchor)] = 1
            elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                stack.append([event.anchor, 1])
                if len(stack) - 1 > MAX_DEPTH:
                    raise InputError(f"YAML nested more than {MAX_DEPTH} levels deep (line {line}); "
                                     "no spec or versions file is", file=file)
                continue
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                anchor, grows = stack.pop()
                if anchor:
                    sizes[str(anchor)] = grows
                stack[-1][1] += grows
                continue
            else:
                continue
            stack[-1][1] += grows
            total = max(total, sum(level[1] for level in stack))
            if total > MAX_NODES:
                raise InputError(f"YAML expands to more than {MAX_NODES:,} nodes (line {line}): aliases that "
                                 "repeat aliases (an alias bomb?)", file=file,
                                 hint="write the values out; deft refuses YAML that grows when its aliases expand")
    except yaml.YAMLError as exc:
        if "nesting depth" in str(exc):  # libyaml's own limit (1000 levels), hit before ours in flow style
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise InputError(f"YAML nested more than {MAX_DEPTH} levels deep{where}; no spec or versions file is",
                             file=file) from exc
        return  # any other syntax error: the real parse reports it with its line


def csv_fields_up_to_max_bytes() -> None:
    """Let Python's csv module read a cell of up to MAX_BYTES (its default, 128 KB, refuses legal CSVs that
    pandas, and so TAO, read fine); past that its csv.Error is the caller's to name with file and row."""
    import csv

    if csv.field_size_limit() < MAX_BYTES:
        csv.field_size_limit(MAX_BYTES)


def json_depth_ok(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether a parsed JSON value nests at most `limit` levels (an explicit stack: no recursion)."""
    todo: list[tuple[Any, int]] = [(value, 0)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth + 1 > limit:
            return False
        todo.extend((child, depth + 1) for child in children)
    return True


def loads_json(data: str | bytes, *, limit: int = MAX_DEPTH) -> Any:
    """`json.loads` whose only failure is ValueError: nesting beyond `limit` (or beyond what the C scanner
    can recurse, a RecursionError) is refused like any malformed JSON, so every caller that already treats an
    unparseable file as unreadable does so for this one too."""
    try:
        value = json.loads(data)
    except RecursionError as exc:
        raise ValueError(f"JSON nested deeper than {limit} levels") from exc
    if not json_depth_ok(value, limit):
        raise ValueError(f"JSON nested deeper than {limit} levels")
    return value
