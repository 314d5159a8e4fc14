"""`pipeline_breaker_state{tenant, vendor}`: each breaker's state, read from Redis per scrape.

Why a collector and not a gauge: a transition is made by whichever worker process ran the
script, and open → half-open happens lazily on the next call, so no process holds the
current state of every breaker — Redis does. Reading it at scrape time is right by
construction, costs nothing on the call path, and works the same in every process that
exposes metrics (worker port or web app). A breaker with no hash in Redis never failed and
is closed; it is left out rather than listed as a zero.
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
import structlog
from prometheus_client.core import GaugeMetricFamily, Metric

from pipeline.breakers.contract import CLOSED, HALF_OPEN, OPEN
from pipeline.breakers.listing import list_breakers

log = structlog.get_logger(__name__)

NAME = "pipeline_breaker_state"
LABELS = ("tenant", "vendor")
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}
_HELP = (
    "Circuit-breaker state per tenant and vendor, read from Redis: 0 closed, 1 half-open, 2 open."
)


class BreakerStateCollector:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix

    def describe(self) -> Iterator[Metric]:
        """Registration asks for names only: no Redis round trip until a scrape."""
        yield GaugeMetricFamily(NAME, _HELP, labels=LABELS)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(NAME, _HELP, labels=LABELS)
        try:
            for breaker in list_breakers(self._client, self._prefix):
                value = STATE_VALUES.get(breaker.state, STATE_VALUES[OPEN])
                family.add_metric([str(breaker.tenant_id), breaker.vendor], value)
        except redis.RedisError as exc:
            # The scrape still answers (the counters matter most when Redis is in trouble);
            # the gap in this series is what an absent() alert would catch.
            log.warning("metrics.breaker_state_unavailable", error=type(exc).__name__)
            return
        yield family
