"""Nothing is stranded: each open item records the last step it durably reached (and that
step's input), when it last moved, how often it was re-driven and which copy of its work
may run; degraded work waiting
for its vendor is kept in `deferrals`; the reconciler keeps its marks between passes.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

OPEN = "status IN ('pending', 'queued', 'running')"
HEALED = "healed_at IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("run_items") as batch:
        batch.add_column(sa.Column("step", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("checkpoint", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("progress_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("redrives", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("generation", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("history", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("healed_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE run_items SET progress_at = updated_at")
    # The reconciler's question — which open items have not moved lately — reads only these.
    op.create_index(
        "ix_run_items_open_progress",
        "run_items",
        ["progress_at"],
        postgresql_where=sa.text(OPEN),
        sqlite_where=sa.text(OPEN),
    )
    # `GET /runs` counts each listed run's healed items: only those rows are read.
    op.create_index(
        "ix_run_items_healed",
        "run_items",
        ["run_id"],
        postgresql_where=sa.text(HEALED),
        sqlite_where=sa.text(HEALED),
    )
    op.create_table(
        "deferrals",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.BigInteger(), nullable=False),
        sa.Column("vendor", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column(
            "item_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("reason", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_try_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("healed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["item_id"], ["run_items.id"], ondelete="CASCADE"),
        sa.UniqueConstraint("item_id", "vendor", name="uq_deferrals_item_vendor"),
    )
    op.create_index("ix_deferrals_item_id", "deferrals", ["item_id"])
    op.create_index(
        "ix_deferrals_status_tenant_vendor", "deferrals", ["status", "tenant_id", "vendor"]
    )
    op.create_table(
        "reconciler_marks",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("reconciler_marks")
    op.drop_index("ix_deferrals_status_tenant_vendor", table_name="deferrals")
    op.drop_index("ix_deferrals_item_id", table_name="deferrals")
    op.drop_table("deferrals")
    op.drop_index("ix_run_items_healed", table_name="run_items")
    op.drop_index("ix_run_items_open_progress", table_name="run_items")
    with op.batch_alter_table("run_items") as batch:
        batch.drop_column("healed_at")
        batch.drop_column("history")
        batch.drop_column("generation")
        batch.drop_column("redrives")
        batch.drop_column("progress_at")
        batch.drop_column("checkpoint")
        batch.drop_column("step")
