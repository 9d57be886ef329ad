"""The image, without a Docker engine: the Dockerfile read as Docker reads it, and what it runs
checked for real (the wheel its build stage makes from exactly the build context that
.dockerignore leaves, the console script its ENTRYPOINT names, the user the chart expects)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.helm.conftest import CHART, REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, instructions joined across line continuations."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or (stripped.startswith("#") and not pending):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif keyword == "ARG" and not stages:
            key, _, default = rest.partition("=")
            args[key] = default
        else:
            stages[-1].instructions.append((keyword, rest.strip()))
    return args, stages


def docker_ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` (relative, '/'-separated) out of the build context:
    the last pattern that matches the path or one of its parent directories decides."""

    def regex(pattern: str) -> re.Pattern[str]:
        out = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                out += ".*"
                i += 2
            elif pattern[i] == "*":
                out += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                out += "[^/]"
                i += 1
            else:
                out += re.escape(pattern[i])
                i += 1
        return re.compile(out + "$")

    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        compiled = regex(pattern.lstrip("!").strip("/"))
        if any(compiled.match(p) for p in prefixes):
            ignored = not negated
    return ignored


def ignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())[1]


def test_docker_ignore_matcher_follows_dockers_rules() -> None:
    patterns = ["*", "!src/", "**/__pycache__", "!keep.txt"]
    assert docker_ignored("README.md", patterns)
    assert not docker_ignored("src/a/b.py", patterns)
    assert docker_ignored("src/a/__pycache__/b.pyc", patterns)
    assert not docker_ignored("keep.txt", patterns)
    assert docker_ignored("other/keep.txt", patterns)


def test_multi_stage_build_on_slim_python_311(stages: list[Stage]) -> None:
    assert len(stages) == 2
    build, runtime = stages
    assert build.name == "build"
    for stage in stages:
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", stage.base), stage.base
    # The runtime stage takes only the built virtual environment from the build stage.
    assert [c for c in runtime.all("COPY") if "--from" in c] == ["--from=build /opt/venv /opt/venv"]
    assert not [c for c in runtime.all("COPY") if "--from" not in c]


def test_runtime_stage_installs_no_build_tools(stages: list[Stage]) -> None:
    runtime_runs = " ".join(stages[-1].all("RUN"))
    for tool in ("apt-get", "apk", "gcc", "build-essential", "pip install", "pip wheel", "make"):
        assert tool not in runtime_runs, tool
    assert "setuptools" in " ".join(stages[0].all("RUN"))  # the build backend leaves the venv


def test_runs_as_the_numeric_non_root_user_the_chart_expects(stages: list[Stage]) -> None:
    (user,) = stages[-1].all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), "numeric, so runAsNonRoot can verify it"
    assert gid.isdigit()
    assert int(uid) > 0
    assert int(gid) > 0
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(uid)
    assert values["podSecurityContext"]["runAsGroup"] == int(gid)
    assert f"--uid {uid}" in " ".join(stages[-1].all("RUN"))  # a passwd entry for it


def test_entrypoint_is_the_eventix_console_script(stages: list[Stage]) -> None:
    (entrypoint,) = stages[-1].all("ENTRYPOINT")
    assert json.loads(entrypoint) == ["eventix"]  # exec form: SIGTERM reaches the process
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["eventix"] == "eventix_operator.cli.main:main"
    assert Path(sys.executable).with_name("eventix").is_file()
    env = " ".join(stages[-1].all("ENV"))
    assert "PATH=/opt/venv/bin:$PATH" in env


def test_build_context_holds_what_the_build_stage_copies(stages: list[Stage]) -> None:
    patterns = ignore_patterns()
    for copy in stages[0].all("COPY"):
        *sources, _ = copy.split()
        for source in sources:
            assert (REPO / source).exists(), source
            assert not docker_ignored(source, patterns), f"{source} is left out by .dockerignore"
    for unwanted in (".venv", ".git", "tests", "helm", "bench", ".env"):
        assert docker_ignored(unwanted, patterns), unwanted


def test_the_build_stage_makes_a_working_wheel_from_the_context(tmp_path: Path) -> None:
    """`pip wheel .` as the build stage runs it, on exactly the files Docker would send.
    Offline (no build isolation): the venv's own setuptools builds it."""
    setuptools = pytest.importorskip("setuptools", minversion="70.1")  # has bdist_wheel
    assert setuptools.__version__
    patterns = ignore_patterns()
    reincluded = [p.lstrip("!").strip("/") for p in patterns if p.startswith("!")]
    context = tmp_path / "context"
    for directory, subdirs, files in os.walk(REPO):
        relative_dir = Path(directory).relative_to(REPO).as_posix()
        prefix = "" if relative_dir == "." else f"{relative_dir}/"
        # Skip directories Docker leaves out whole (no exception re-includes anything in them).
        subdirs[:] = [
            d for d in subdirs
            if not docker_ignored(prefix + d, patterns)
            or any(r.startswith(prefix + d + "/") for r in reincluded)
        ]  # fmt: skip
        for name in files:
            relative = prefix + name
            if not docker_ignored(relative, patterns):
                (context / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / relative, context / relative)
    assert (context / "pyproject.toml").is_file()
    assert not (context / ".venv").exists()
    assert not (context / "tests").exists()
    done = subprocess.run(
        [
            sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
            "--no-index", "--quiet", "--wheel-dir", str(tmp_path / "wheels"), str(context),
        ],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "wheels").glob("eventix_operator-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "eventix = eventix_operator.cli.main:main" in archive.read(entry_points).decode()
    assert "eventix_operator/db/migrations/env.py" in names
    assert "eventix_operator/py.typed" in names
    assert any(re.match(r"eventix_operator/db/migrations/versions/0001_\w+\.py$", n) for n in names)
    assert "eventix_operator/cli/main.py" in names
    # the dashboard's templates and static files ship inside the package (air-gapped)
    for page in ("base", "overview", "tasks", "task", "schedules", "schedule", "pools", "login"):
        assert f"eventix_operator/api/ui/templates/{page}.html" in names, page
    for static in ("app.css", "app.js", "favicon.svg"):
        assert f"eventix_operator/api/ui/static/{static}" in names, static
    assert not any("__pycache__" in n or n.startswith("tests/") for n in names)
