#!/usr/bin/env python3
"""Generate the chart's values.schema.json from its values.yaml.

Types come from the defaults (a mapping's keys become its properties, and it rejects any other
key unless a hint says ``additionalProperties: true``); ``# @schema`` hints add or override
keywords; ``# --`` descriptions become ``description``. A key whose default says nothing of its
type (null, an empty mapping or list) needs a hint. ``--check`` fails when the file differs.

    python tools/chart/gen_schema.py [--check] [CHART_DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tools.chart.output import write_or_check
from tools.chart.values_doc import DEFS, Entry, ValuesDoc, ValuesDocError, parse

CHART = Path(__file__).resolve().parents[2] / "helm" / "eventix-operator"
SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"


def _scalar_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _node(doc: ValuesDoc, entry: Entry) -> dict[str, Any]:
    hints = dict(entry.hints)
    schema: dict[str, Any] = {}
    if entry.description:
        schema["description"] = entry.description
    if "$ref" in hints:
        schema.update(hints)
        schema["default"] = entry.value
        return schema
    value = entry.value
    where = f"values.yaml line {entry.line}: {entry.dotted}"
    if isinstance(value, dict):
        schema["type"] = "object"
        children = doc.children(entry.path)
        if children:
            schema["properties"] = {c.path[-1]: _node(doc, c) for c in children}
        elif "additionalProperties" not in hints and "properties" not in hints:
            raise ValuesDocError(f"{where}: an empty mapping needs an @schema hint")
        schema["additionalProperties"] = False
    elif isinstance(value, list):
        schema["type"] = "array"
        kinds = {_scalar_type(v) for v in value}
        if "items" not in hints:
            if len(kinds) != 1 or None in kinds:
                raise ValuesDocError(f"{where}: a list needs an @schema items hint")
            schema["items"] = {"type": kinds.pop()}
    else:
        kind = _scalar_type(value)
        if kind is None and "type" not in hints:
            raise ValuesDocError(f"{where}: a null default needs an @schema type hint")
        if kind is not None:
            schema["type"] = kind
    schema.update(hints)
    if not isinstance(value, dict):
        schema["default"] = value
    return schema


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"].removeprefix("#/$defs/")} if "$ref" in node else set()
        for child in node.values():
            found |= _refs(child)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(c) for c in node)) if node else set()
    return set()


def build(chart: Path = CHART) -> dict[str, Any]:
    """The schema of ``chart``'s values.yaml."""
    doc = parse(chart / "values.yaml")
    properties: dict[str, Any] = {
        e.path[0]: _node(doc, e) for e in doc.entries.values() if len(e.path) == 1
    }
    # Helm passes `global` to every chart when this one is a dependency of another.
    properties["global"] = {
        "type": "object",
        "description": "Values a parent chart shares with its dependencies.",
    }
    used: set[str] = set()
    todo = _refs(properties)
    while todo:
        name = todo.pop()
        used.add(name)
        todo |= _refs(DEFS[name]) - used
    return {
        "$schema": SCHEMA_URI,
        "title": f"Values of the {chart.name} chart",
        "description": "Generated from values.yaml by tools/chart/gen_schema.py; do not edit.",
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "$defs": {name: DEFS[name] for name in sorted(used)},
    }


def render(chart: Path = CHART) -> str:
    return json.dumps(build(chart), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chart", nargs="?", type=Path, default=CHART)
    parser.add_argument("--check", action="store_true", help="fail if the file is not current")
    args = parser.parse_args(argv)
    target = args.chart / "values.schema.json"
    try:
        text = render(args.chart)
    except ValuesDocError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return write_or_check(target, text, check=args.check)


if __name__ == "__main__":
    sys.exit(main())
