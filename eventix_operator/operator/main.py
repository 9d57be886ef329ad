"""Run the operator: kopf with our handlers, peering and a liveness endpoint."""

from __future__ import annotations

from collections.abc import Sequence

import kopf


def run_operator(
    *,
    namespaces: Sequence[str],
    peering: str | None,
    priority: int,
    liveness: str | None,
) -> None:
    """Watch the given namespaces (none: the whole cluster) until SIGTERM.

    With ``peering`` (a ClusterKopfPeering or KopfPeering name), replicas see
    each other and only the one with the highest priority handles resources;
    without it this replica runs alone.
    """
    import eventix_operator.operator.handlers  # noqa: F401  (registers the handlers)

    kopf.run(
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        standalone=peering is None,
        peering_name=peering,
        priority=priority,
        liveness_endpoint=liveness,
    )
