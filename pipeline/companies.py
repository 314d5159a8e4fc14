"""A tenant's companies and the contacts enrichment found for them.

Companies are identified within a tenant by a natural key (the lower-cased domain, or the
name when there is no domain), so enqueuing the same company twice reuses one row. Saving
an enrichment result upserts: running a step twice (tasks are acked late) writes the same
rows, never duplicates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from pipeline.db.engine import joined, session_scope
from pipeline.db.models import Company, Contact, utcnow
from pipeline.db.upsert import insert_for
from pipeline.errors import InputError
from pipeline.storable import unstorable


@dataclass(frozen=True)
class CompanyRef:
    """What a step needs to know about a company (small: it travels in task messages)."""

    id: int | None
    name: str | None
    domain: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "domain": self.domain}


def natural_key(name: str | None, domain: str | None) -> str:
    return domain.lower() if domain else f"name:{(name or '').strip().lower()}"


def check_storable(companies: Sequence[CompanyRef]) -> None:
    """`InputError` naming each company name or domain Postgres could not store (a NUL
    character, a lone surrogate): refused with a reason here rather than failing in the
    driver, whichever way the company came in (API, CSV, Python)."""
    errors = [
        {"field": f"companies.{index}.{field}", "message": reason, "type": "value_error"}
        for index, company in enumerate(companies)
        for field in ("name", "domain")
        if (reason := unstorable(getattr(company, field) or "")) is not None
    ]
    if errors:
        named = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise InputError(f"companies Postgres cannot store: {named}", details={"errors": errors})


def upsert_companies(tenant_id: int, companies: Sequence[CompanyRef]) -> list[int]:
    """Ids of `companies` (created if new), in the order given. A name or domain Postgres
    cannot store is `InputError` (`check_storable`), before anything is written."""
    check_storable(companies)
    keys = [natural_key(c.name, c.domain) for c in companies]
    with session_scope() as session:
        rows = [
            {"tenant_id": tenant_id, "natural_key": key, "name": c.name, "domain": c.domain}
            for key, c in zip(keys, companies, strict=True)
        ]
        if rows:
            statement = insert_for(session, Company).values(rows)
            session.execute(
                statement.on_conflict_do_nothing(index_elements=["tenant_id", "natural_key"])
            )
        found = dict(
            session.execute(
                select(Company.natural_key, Company.id).where(
                    Company.tenant_id == tenant_id, Company.natural_key.in_(set(keys))
                )
            ).all()
        )
    return [found[key] for key in keys]


def companies_by_id(tenant_id: int, ids: Iterable[int]) -> dict[int, CompanyRef]:
    with session_scope() as session:
        rows = session.scalars(
            select(Company).where(Company.tenant_id == tenant_id, Company.id.in_(set(ids)))
        )
        return {c.id: CompanyRef(c.id, c.name, c.domain) for c in rows}


def with_contacts(company_ids: Iterable[int]) -> set[int]:
    """Which of `company_ids` already have contacts (one query for a whole run)."""
    with session_scope() as session:
        return set(
            session.scalars(
                select(Contact.company_id)
                .where(Contact.company_id.in_(set(company_ids)))
                .distinct()
            )
        )


def save_enrichment(
    tenant_id: int,
    company_id: int,
    *,
    site_text_length: int | None,
    search_results: int | None,
    contacts: Iterable[dict[str, Any]],
    session: Session | None = None,
) -> None:
    """Write what enrichment found (idempotent: contacts upsert on (company, email))."""
    with joined(session) as session:
        session.execute(
            update(Company)
            .where(Company.id == company_id)
            .values(  # what this run did not learn keeps what an earlier run found
                site_text_length=func.coalesce(site_text_length, Company.site_text_length),
                search_results=func.coalesce(search_results, Company.search_results),
                enriched_at=utcnow(),
            )
        )
        by_email = {c["email"]: c for c in contacts}  # one row per email, last one wins
        rows = [
            {
                "company_id": company_id,
                "tenant_id": tenant_id,
                "name": c.get("name", ""),
                "title": c.get("title", ""),
                "email": c["email"],
                "email_status": c.get("email_status"),
                "source": c.get("source", ""),
                "updated_at": utcnow(),
            }
            for c in by_email.values()
        ]
        if rows:
            statement = insert_for(session, Contact).values(rows)
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=["company_id", "email"],
                    set_={
                        "name": statement.excluded.name,
                        "title": statement.excluded.title,
                        "email_status": statement.excluded.email_status,
                        "source": statement.excluded.source,
                        "updated_at": statement.excluded.updated_at,
                    },
                )
            )


def contacts_of(company_id: int) -> list[Contact]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(Contact).where(Contact.company_id == company_id).order_by(Contact.id)
            )
        )


def contacts_by_id(tenant_id: int, ids: Iterable[int]) -> dict[int, tuple[Contact, str | None]]:
    """The tenant's contacts with these ids, each with its company's name."""
    with session_scope() as session:
        rows = session.execute(
            select(Contact, Company.name)
            .join(Company, Company.id == Contact.company_id)
            .where(Contact.tenant_id == tenant_id, Contact.id.in_(set(ids)))
        ).all()
        return {contact.id: (contact, name) for contact, name in rows}


def contact_ids_of_companies(tenant_id: int, company_ids: Iterable[int]) -> list[int]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(Contact.id)
                .where(Contact.tenant_id == tenant_id, Contact.company_id.in_(set(company_ids)))
                .order_by(Contact.id)
            )
        )
