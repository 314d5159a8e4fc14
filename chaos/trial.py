"""One scenario played once: its tenants and pipelines, the fault, the wait, the measurement.

    ready tenants → scenario.prepare → enqueue pipelines → scenario.disrupt
                  → wait until settled (or the reconcile deadline) → measure → scenario.check

Every pipeline is `enqueue_enrichment(tenant, companies, then=["crm_sync", "export"])`, run
in this process with the chaos environment applied. A scenario's own checks (a worker that
died of a poison message, a vendor called for a run that does not exist) are failures of the
scenario beside the four measured numbers; its observations are notes.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chaos.measure import Database, Measurement, Observer
from chaos.processes import say
from chaos.stack import ChaosStack

STAGES = ["crm_sync", "export"]
TENANT_BASE = 10_000


@dataclass(frozen=True)
class Scenario:
    name: str
    about: str
    disrupt: Callable[[Trial], None]
    prepare: Callable[[Trial], None] = lambda trial: None
    check: Callable[[Trial, Measurement], None] = lambda trial, m: None
    tenants: int = 2


@dataclass
class Trial:
    stack: ChaosStack
    scenario: Scenario
    index: int
    companies: int  # per tenant
    db: Database
    tenants: list[int] = field(default_factory=list)
    firsts: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    marks: dict[str, Any] = field(default_factory=dict)  # what a scenario keeps for its check

    def __post_init__(self) -> None:
        base = TENANT_BASE * (self.index + 1)
        self.tenants = [base + k for k in range(1, self.scenario.tenants + 1)]

    @property
    def admin(self) -> Any:
        assert self.stack.sim is not None
        return self.stack.sim.admin

    @property
    def observer(self) -> Observer:
        return Observer(self.db, self.firsts, self.tenants)

    def pipeline_of(self, tenant: int) -> Observer:
        """The observer of one tenant's pipeline alone."""
        return Observer(self.db, [self.firsts[self.tenants.index(tenant)]], [tenant])

    def note(self, text: str) -> None:
        self.notes.append(text)

    def fail(self, text: str) -> None:
        self.failures.append(text)

    # -- what the simulator saw ----------------------------------------------------------------

    def calls(self, vendor: str, tenants: list[int] | None = None) -> int:
        counts = self.admin.stats()["calls"].get(vendor, {})
        return sum(int(counts.get(str(t), 0)) for t in tenants or self.tenants)

    def errors(self, vendor: str, tenants: list[int] | None = None) -> int:
        counts = self.admin.stats()["errors"].get(vendor, {})
        return sum(int(counts.get(str(t), 0)) for t in tenants or self.tenants)

    def wait_calls(self, vendor: str, at_least: int, *, timeout: float = 120) -> None:
        """Until `vendor` has had `at_least` calls from the trial's tenants."""
        deadline = time.monotonic() + timeout
        while self.calls(vendor) < at_least:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{vendor} never reached {at_least} calls")
            time.sleep(0.1)

    def mid_enrichment(self) -> None:
        """Until the enrichment is about half-way: a third of the contact look-ups are made
        (the chains advance through the queue pass by pass: crawl, search, contacts, ...)."""
        self.wait_calls("apify_linkedin", max(1, len(self.tenants) * self.companies // 3))

    def companies_for(self, tenant: int) -> list[dict[str, str]]:
        slug = self.scenario.name
        return [
            {"name": f"Chaos {slug} {n}", "domain": f"{slug}-{n}.t{tenant}.example"}
            for n in range(self.companies)
        ]


@dataclass
class Row:
    name: str
    items: int = 0
    lost: int = 0
    duplicates: int = 0
    stuck: int = 0
    healed: int = 0
    deferred: int = 0
    seconds: float = 0.0
    settled: bool = False
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (
            not self.failures
            and self.lost == 0
            and self.duplicates == 0
            and self.stuck == 0
            and self.healed == self.deferred
        )


def ready_tenant(trial: Trial, tenant: int) -> None:
    """CRM and ERP accounts at the simulator, and their credentials stored (encrypted)."""
    from pipeline.credentials import put_credential

    secret = f"chaos-secret-{tenant}"
    trial.admin.register_crm_client(tenant, f"client-{tenant}", secret)
    put_credential(tenant, "crm", {"client_id": f"client-{tenant}", "client_secret": secret})
    trial.admin.register_erp_user(tenant, f"odoo_{tenant}", "admin", secret)
    put_credential(tenant, "erp", {"db": f"odoo_{tenant}", "login": "admin", "password": secret})


def supervise(trial: Trial) -> None:
    """What a process supervisor would do: start again a worker or beat that has exited by
    itself (noted on the row; a scenario whose check forbids it fails on its own)."""
    stack, restarted = trial.stack, []
    if stack.worker.proc.poll() is not None:
        say("the worker's main process has exited: starting a new worker")
        stack.start_worker()
        restarted.append("worker")
    if not stack.beat.alive():
        say("beat has exited: starting it again")
        stack.start_beat()
        restarted.append("beat")
    for what in restarted:
        counts = trial.marks.setdefault("restarts_by", {})
        counts[what] = counts.get(what, 0) + 1
        trial.marks["restarts"] = ", ".join(f"{n} {w}" for w, n in counts.items())


def play(trial: Trial, settle_s: float) -> Row:
    """Run the trial to the end; a scenario that raises is a failed row, never a crash."""
    from pipeline import enqueue_enrichment

    scenario = trial.scenario
    say(f"{scenario.name}: {scenario.about}")
    for tenant in trial.tenants:
        ready_tenant(trial, tenant)
    scenario.prepare(trial)
    started = time.monotonic()
    for tenant in trial.tenants:
        trial.firsts.append(enqueue_enrichment(tenant, trial.companies_for(tenant), then=STAGES))
    try:
        scenario.disrupt(trial)
    except Exception as exc:
        trial.fail(f"disruption failed: {type(exc).__name__}: {exc}")
        say(traceback.format_exc())
    deadline = time.monotonic() + settle_s
    observer = trial.observer
    while not (settled := observer.settled()) and time.monotonic() < deadline:
        supervise(trial)
        time.sleep(0.5)
    restarts = trial.marks.get("restarts")
    if restarts:
        trial.note(f"{restarts} exited by itself and was restarted")
    seconds = time.monotonic() - started
    if not settled:
        trial.note(f"not settled {settle_s:.0f}s after the fault ended")
    measurement = observer.measure(
        {t: trial.admin.crm_contacts(t) for t in trial.tenants},
        {t: trial.admin.erp_partners(t) for t in trial.tenants},
    )
    outcomes = {k: n for k, n in measurement.by_status.items() if not k.endswith(":succeeded")}
    if outcomes:
        trial.note("not succeeded: " + ", ".join(f"{k} {n}" for k, n in outcomes.items()))
    try:
        scenario.check(trial, measurement)
    except Exception as exc:
        trial.fail(f"check failed: {type(exc).__name__}: {exc}")
    row = Row(
        scenario.name,
        items=measurement.items,
        lost=measurement.lost,
        duplicates=measurement.duplicates,
        stuck=measurement.stuck,
        healed=measurement.healed,
        deferred=measurement.deferred,
        seconds=seconds,
        settled=settled,
        failures=trial.failures,
        notes=trial.notes,
    )
    if not row.passed:
        details = measurement.lost_examples + measurement.stuck_examples
        say(f"{scenario.name} FAILED; items by status {measurement.by_status}")
        for line in details + [f"failure: {f}" for f in row.failures]:
            say(f"  {line}")
        say(trial.stack.log_tails())
    return row
