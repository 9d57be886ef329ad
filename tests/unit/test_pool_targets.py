"""Which workloads a pool may scale (the opt-in label, never eventix's own), and the
operator's ceiling on every pool's replicas: pure functions."""

from __future__ import annotations

import pytest

from eventix_operator.scaling import pool_config
from eventix_operator.scaling.targets import SCALABLE_LABEL, check_target

CHART = {"app.kubernetes.io/part-of": "eventix", "app.kubernetes.io/name": "eventix-operator"}


@pytest.mark.parametrize(
    ("labels", "refusal"),
    [
        ({SCALABLE_LABEL: "true"}, None),
        ({**CHART, "app.kubernetes.io/component": "worker", SCALABLE_LABEL: "true"}, None),
        # Someone else's app calling itself "api" is not eventix's.
        ({"app.kubernetes.io/component": "api", SCALABLE_LABEL: "true"}, None),
        (None, "does not let pools scale it"),
        ({}, "does not let pools scale it"),
        ({SCALABLE_LABEL: "True"}, "does not let pools scale it"),  # label values are exact
        ({"eventix.io/scalable-please": "true"}, "does not let pools scale it"),
        (
            {**CHART, "app.kubernetes.io/component": "operator", SCALABLE_LABEL: "true"},
            "is eventix's own operator",
        ),
        ({**CHART, "app.kubernetes.io/component": "api"}, "is eventix's own api"),
        ({**CHART, "app.kubernetes.io/component": "migration"}, "is eventix's own migration"),
    ],
)
def test_only_targets_that_opt_in_and_are_not_eventix_itself(
    labels: dict[str, str] | None, refusal: str | None
) -> None:
    found = check_target("Deployment", "w", labels)
    if refusal is None:
        assert found is None
    else:
        assert found is not None
        assert refusal in found


def test_the_refusal_says_how_to_opt_in() -> None:
    found = check_target("StatefulSet", "batch", {})
    assert found == (
        "StatefulSet batch does not let pools scale it: its owner opts in with the label "
        'eventix.io/scalable="true" (kubectl label statefulset batch eventix.io/scalable=true)'
    )


SPEC = {"scaleTargetRef": {"name": "w"}, "minReplicas": 2, "maxReplicas": 50}


def test_a_pool_within_the_ceiling_is_as_asked() -> None:
    config = pool_config(SPEC, ceiling=50)
    assert (config.scaling.min_replicas, config.scaling.max_replicas) == (2, 50)
    assert config.capped is None
    assert pool_config(SPEC).capped is None  # no ceiling


def test_the_ceiling_lowers_the_bounds_and_says_so() -> None:
    config = pool_config(SPEC, ceiling=10)
    assert (config.scaling.min_replicas, config.scaling.max_replicas) == (2, 10)
    assert (
        config.capped == "maxReplicas 50 capped at 10, the operator's EVENTIX_OPERATOR_MAX_REPLICAS"
    )
    both = pool_config({**SPEC, "minReplicas": 20}, ceiling=10)
    assert (both.scaling.min_replicas, both.scaling.max_replicas) == (10, 10)
    assert both.capped is not None
    assert both.capped.startswith("minReplicas 20 and maxReplicas 50 capped at 10")
