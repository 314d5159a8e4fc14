"""The registry of scenarios, in the order the suite plays them."""

from __future__ import annotations

from chaos.scenarios import kills, outages, poison, vendors
from chaos.trial import Scenario

SCENARIOS: list[Scenario] = [
    kills.BASELINE,
    kills.WORKER_MAIN_KILL,
    kills.CHILD_KILL_ENRICHMENT,
    kills.CHILD_KILL_SYNC,
    kills.CHILD_KILL_EXPORT,
    outages.REDIS_RESTART_EMPTY,
    outages.POSTGRES_20S,
    outages.POSTGRES_60S,
    poison.POISON,
    vendors.VENDORS_DOWN_HEAL,
    vendors.RATE_LIMIT_STORM,
    vendors.HUNG_WRITES,
]


def by_name() -> dict[str, Scenario]:
    return {scenario.name: scenario for scenario in SCENARIOS}
