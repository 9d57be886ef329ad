#!/usr/bin/env python3
"""Copy the repository's CRDs (crds/*.yaml) into the chart's crds/ directory, byte for byte.

crds/ at the repository root is the one source; the chart ships a copy because Helm installs
only what is inside the chart. Files that are no longer in crds/ are removed from the copy.
``--check`` changes nothing and fails when the copy differs.

    python tools/chart/sync_crds.py [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "crds"
TARGET = ROOT / "helm" / "eventix-operator" / "crds"


def differences(source: Path = SOURCE, target: Path = TARGET) -> list[str]:
    """What differs between the two directories' YAML files, one line each."""
    wanted = {p.name: p.read_bytes() for p in sorted(source.glob("*.yaml"))}
    present = {p.name: p.read_bytes() for p in sorted(target.glob("*.yaml"))}
    found = [f"missing in the chart: {n}" for n in wanted if n not in present]
    found += [f"not in crds/: {n}" for n in present if n not in wanted]
    found += [f"differs: {n}" for n in wanted if n in present and present[n] != wanted[n]]
    return found


def sync(source: Path = SOURCE, target: Path = TARGET) -> list[str]:
    """Make ``target`` equal ``source``; the changes made."""
    changes = differences(source, target)
    target.mkdir(parents=True, exist_ok=True)
    names = set()
    for path in sorted(source.glob("*.yaml")):
        names.add(path.name)
        copy = target / path.name
        if not copy.is_file() or copy.read_bytes() != path.read_bytes():
            copy.write_bytes(path.read_bytes())
    for stale in target.glob("*.yaml"):
        if stale.name not in names:
            stale.unlink()
    return changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the copy differs")
    args = parser.parse_args(argv)
    if args.check:
        found = differences()
        for line in found:
            print(f"{TARGET}: {line}", file=sys.stderr)
        if found:
            print("run tools/chart/generate", file=sys.stderr)
        return 1 if found else 0
    for line in sync():
        print(f"synced ({line})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
