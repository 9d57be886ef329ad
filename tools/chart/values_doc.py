"""Read a Helm values.yaml with its helm-docs comments: every key, its default, its description
and its JSON Schema hints, in file order.

The comment block right above a key documents it:

    # -- What this key does (one line, or more lines that follow).
    # @schema {minimum: 1, $ref: "#/$defs/resources"}
    key: value

``# --`` starts the description; ``# @schema`` lines hold a YAML flow mapping of JSON Schema
keywords merged into the key's schema. A blank line or a line of YAML ends a block; comment
lines before ``# --`` (section notes) are not part of it. Keys inside list items are not keys
of the values (they are part of a list's default).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_][A-Za-z0-9_.-]*|\"[^\"]+\"):(\s|$)")

#: Fragments that ``$ref: "#/$defs/<name>"`` hints may name.
DEFS: dict[str, dict[str, Any]] = {
    "stringMap": {
        "type": "object",
        "description": "Names to strings (labels, annotations, a node selector).",
        "additionalProperties": {"type": "string"},
    },
    "object": {
        "type": "object",
        "description": "A Kubernetes object of the kind the key names, as in a manifest.",
    },
    "objectList": {
        "type": "array",
        "description": "Kubernetes objects of the kind the key names, as in a manifest.",
        "items": {"type": "object"},
    },
    "envList": {
        "type": "array",
        "description": "Container environment variables (name with value or valueFrom).",
        "items": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "value": {"type": "string"},
                "valueFrom": {"type": "object"},
            },
        },
    },
    "quantity": {
        "description": "A Kubernetes quantity: 100m, 0.5, 256Mi, 1G.",
        "anyOf": [
            {
                "type": "string",
                "pattern": (
                    r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)"
                    r"([eE][-+]?[0-9]+|m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"
                ),
            },
            {"type": "number", "minimum": 0},
        ],
    },
    "resourceList": {
        "type": "object",
        "description": "Resource names (cpu, memory, ephemeral-storage, …) to quantities.",
        "additionalProperties": {"$ref": "#/$defs/quantity"},
    },
    "resources": {
        "type": "object",
        "description": "Container resources: requests and limits.",
        "additionalProperties": False,
        "properties": {
            "requests": {"$ref": "#/$defs/resourceList"},
            "limits": {"$ref": "#/$defs/resourceList"},
            "claims": {"$ref": "#/$defs/objectList"},
        },
    },
    "intOrString": {
        "description": "A count, or a percentage such as 25%.",
        "anyOf": [
            {"type": "integer", "minimum": 0},
            {"type": "string", "pattern": "^[0-9]+%$"},
        ],
    },
}


class ValuesDocError(ValueError):
    """values.yaml breaks a documentation rule; the message names the key and line."""


@dataclass
class Entry:
    """One key of the values, with what its comment block says."""

    path: tuple[str, ...]
    line: int
    value: Any
    description: str = ""
    hints: dict[str, Any] = field(default_factory=dict)

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


@dataclass
class ValuesDoc:
    values: dict[str, Any]
    entries: dict[tuple[str, ...], Entry]

    def children(self, path: tuple[str, ...]) -> list[Entry]:
        return [e for p, e in self.entries.items() if len(p) == len(path) + 1 and p[:-1] == path]


def _lookup(values: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    node = values
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


def _parse_block(lines: list[tuple[int, str]]) -> tuple[str, dict[str, Any]]:
    description: list[str] = []
    hints: dict[str, Any] = {}
    started = False
    for number, text in lines:
        if text.startswith("@schema"):
            raw = text.removeprefix("@schema").strip()
            try:
                parsed = yaml.safe_load(raw)
            except yaml.YAMLError as exc:
                raise ValuesDocError(f"line {number}: @schema is not YAML: {exc}") from exc
            if not isinstance(parsed, dict):
                raise ValuesDocError(f"line {number}: @schema needs a mapping, got {raw!r}")
            hints.update(parsed)
        elif text.startswith("-- ") or text == "--":
            started = True
            description = [text[3:].strip()]
        elif started:
            description.append(text.strip())
    return " ".join(d for d in description if d), hints


def parse(path: Path) -> ValuesDoc:
    """Every key of ``path`` (a values.yaml) with its comment block, in file order."""
    text = path.read_text()
    values = yaml.safe_load(text) or {}
    if not isinstance(values, dict):
        raise ValuesDocError(f"{path}: the values must be a mapping")
    entries: dict[tuple[str, ...], Entry] = {}
    stack: list[tuple[int, str]] = []
    block: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped:
            block = []
            continue
        if stripped.startswith("#"):
            block.append((number, stripped[1:].strip()))
            continue
        match = KEY_LINE.match(raw)
        if match is None:  # a list item or a continued value
            block = []
            continue
        indent = len(match["indent"])
        key = match["key"].strip('"')
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key_path = (*(k for _, k in stack), key)
        found, value = _lookup(values, key_path)
        if not found:  # a key inside a list item's mapping
            block = []
            continue
        stack.append((indent, key))
        if any("$ref" in entries[key_path[:i]].hints for i in range(1, len(key_path))):
            block = []  # a default inside a fragment's type: part of the parent's value
            continue
        description, hints = _parse_block(block)
        entries[key_path] = Entry(key_path, number, value, description, hints)
        block = []
    doc = ValuesDoc(values, entries)
    _check(doc)
    return doc


def _check(doc: ValuesDoc) -> None:
    """Every key is documented, except mappings whose keys all are."""
    for entry in doc.entries.values():
        container = isinstance(entry.value, dict) and bool(entry.value)
        if not entry.description and not container:
            raise ValuesDocError(
                f"values.yaml line {entry.line}: {entry.dotted} has no '# --' description"
            )
        ref = entry.hints.get("$ref")
        if ref is not None and ref.removeprefix("#/$defs/") not in DEFS:
            raise ValuesDocError(f"values.yaml line {entry.line}: {entry.dotted}: unknown {ref}")
