"""Runs link to the run they follow, and an export run can say its ERP was unavailable.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("parent_run_id", sa.Uuid(), nullable=True))
        batch.add_column(
            sa.Column("export_disabled", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("export_disabled_reason", sa.Text(), nullable=True))
        batch.create_foreign_key(
            "fk_runs_parent_run_id", "runs", ["parent_run_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint("fk_runs_parent_run_id", type_="foreignkey")
        batch.drop_column("export_disabled_reason")
        batch.drop_column("export_disabled")
        batch.drop_column("parent_run_id")
