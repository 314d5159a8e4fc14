"""The vendor simulator: a real loopback HTTP server standing in for every third-party
vendor the product calls (crawler, search, apify_linkedin, lusha, zerobounce, crm, erp),
with seeded, scriptable faults — for tests, the demo and benchmarks.

`Simulator` runs in-process; `serve()` runs one in the foreground of its own process;
`SimulatorAdmin` drives that one over HTTP. See `simulator` for the API and `faults` for
what can go wrong.
"""

from __future__ import annotations

from pipeline.simulator.admin import SimulatorAdmin
from pipeline.simulator.faults import Fault, Outage
from pipeline.simulator.simulator import Simulator, serve

__all__ = ["Fault", "Outage", "Simulator", "SimulatorAdmin", "serve"]
