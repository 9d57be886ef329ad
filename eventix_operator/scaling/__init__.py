"""Worker-pool sizing: how many workers a queue needs, as pure functions.

No clock, no database, no Kubernetes: the operator's scaler loop, the unit tests
(with a fake clock) and ``bench/autoscale.py`` all run the same decisions.
"""

from eventix_operator.scaling.scaler import (
    Decision,
    Limit,
    Load,
    PoolSpec,
    ScalerState,
    decide,
    wanted_replicas,
)
from eventix_operator.scaling.spec import PoolConfig, pool_config

__all__ = [
    "Decision",
    "Limit",
    "Load",
    "PoolConfig",
    "PoolSpec",
    "ScalerState",
    "decide",
    "pool_config",
    "wanted_replicas",
]
