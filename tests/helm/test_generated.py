"""What is generated stays generated: the chart's CRDs, values.schema.json, the README's values
table and the Argo CD ConfigMap equal what tools/chart makes from their sources now; and the
generators refuse undocumented values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helm.conftest import CHART, REPO
from tools.chart import gen_argocd, gen_readme, gen_schema, sync_crds
from tools.chart.values_doc import ValuesDocError, parse

STALE = "run tools/chart/generate"


def test_chart_crds_are_the_repository_crds() -> None:
    assert sync_crds.differences() == [], STALE
    names = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    assert "eventixtask.yaml" in names
    assert names == sorted(p.name for p in (CHART / "crds").glob("*.yaml"))


def test_sync_crds_copies_changes_and_removes_stale_copies(tmp_path: Path) -> None:
    source, target = tmp_path / "crds", tmp_path / "chart-crds"
    source.mkdir()
    (source / "a.yaml").write_text("kind: CustomResourceDefinition # a\n")
    (source / "b.yaml").write_text("kind: CustomResourceDefinition # b\n")
    assert sync_crds.sync(source, target) == [
        "missing in the chart: a.yaml",
        "missing in the chart: b.yaml",
    ]
    (source / "a.yaml").write_text("kind: CustomResourceDefinition # a, changed\n")
    (source / "b.yaml").unlink()
    assert sync_crds.differences(source, target) == ["not in crds/: b.yaml", "differs: a.yaml"]
    sync_crds.sync(source, target)
    assert sync_crds.differences(source, target) == []
    assert sorted(p.name for p in target.iterdir()) == ["a.yaml"]


def test_values_schema_is_generated_from_values_yaml() -> None:
    committed = (CHART / "values.schema.json").read_text()
    assert committed == gen_schema.render(), STALE


def test_readme_values_table_is_generated_from_values_yaml() -> None:
    assert (CHART / "README.md").read_text() == gen_readme.render(), STALE
    table = gen_readme.table()
    for entry in parse(CHART / "values.yaml").entries.values():
        if entry.description:
            assert f"| `{entry.dotted}` |" in table


def test_argocd_configmap_is_generated_from_the_lua_scripts() -> None:
    assert (CHART / "argocd" / "argocd-cm.yaml").read_text() == gen_argocd.render(), STALE


def test_generate_check_passes_on_the_committed_chart() -> None:
    done = subprocess.run(
        ["bash", str(REPO / "tools" / "chart" / "generate"), "--check"],
        capture_output=True,
        text=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_every_value_has_a_description_and_a_type() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(node: dict[str, object], path: str) -> None:
        assert "description" in node or "properties" in node, path
        assert "type" in node or "$ref" in node or "anyOf" in node, path
        for key, child in node.get("properties", {}).items():  # type: ignore[attr-defined]
            walk(child, f"{path}.{key}")

    for key, node in schema["properties"].items():
        walk(node, key)
    assert schema["additionalProperties"] is False


def _chart_with(tmp_path: Path, values: str) -> Path:
    (tmp_path / "values.yaml").write_text(values)
    (tmp_path / "README.md").write_text(f"# x\n{gen_readme.BEGIN}\n{gen_readme.END}\n")
    return tmp_path


def test_generator_infers_types_and_applies_hints(tmp_path: Path) -> None:
    chart = _chart_with(
        tmp_path,
        "# -- Replicas.\n# @schema {minimum: 1}\nreplicas: 2\n"
        "group:\n"
        "  # -- A name.\n  name: x\n"
        "  # -- Open map.\n  # @schema {additionalProperties: {type: string}}\n  labels: {}\n"
        "# -- Queues.\nqueues:\n  - a\n  - b\n",
    )
    schema = gen_schema.build(chart)
    props = schema["properties"]
    assert props["replicas"] == {
        "description": "Replicas.", "type": "integer", "minimum": 1, "default": 2,
    }  # fmt: skip
    assert props["group"]["additionalProperties"] is False
    assert props["group"]["properties"]["name"]["type"] == "string"
    assert props["group"]["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    assert props["queues"]["items"] == {"type": "string"}
    assert "| `group.labels` | object | `{}` | Open map. |" in gen_readme.table(chart)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ("replicas: 2\n", "replicas has no '# --' description"),
        ("# -- Free.\nthing: {}\n", "an empty mapping needs an @schema hint"),
        ("# -- Nothing.\nthing: null\n", "a null default needs an @schema type hint"),
        ("# -- Mixed.\nthing:\n  - 1\n  - a\n", "a list needs an @schema items hint"),
        ("# -- Bad.\n# @schema [1]\nthing: 1\n", "@schema needs a mapping"),
        ('# -- Ref.\n# @schema {$ref: "#/$defs/nope"}\nthing: 1\n', "unknown #/$defs/nope"),
    ],
    ids=["undocumented", "free-map", "null", "mixed-list", "not-a-mapping", "unknown-ref"],
)
def test_generator_refuses_what_it_cannot_document(
    tmp_path: Path, values: str, message: str
) -> None:
    with pytest.raises(ValuesDocError, match="line [0-9]+: .*" + message.replace("$", r"\$")):
        gen_schema.build(_chart_with(tmp_path, values))
