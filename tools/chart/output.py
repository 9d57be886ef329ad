"""How every chart generator ends: write its file, or with --check say it is stale."""

from __future__ import annotations

import sys
from pathlib import Path


def write_or_check(target: Path, text: str, *, check: bool) -> int:
    """Exit status: with ``check``, 1 when ``target`` differs from ``text``; else write it."""
    if check:
        if not target.is_file() or target.read_text() != text:
            print(f"{target} is out of date: run tools/chart/generate", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    print(f"wrote {target}")
    return 0
