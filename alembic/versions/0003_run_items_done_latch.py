"""Runs count their finished items: the latch that closes a run without rescanning it.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "runs", sa.Column("items_done", sa.Integer(), nullable=False, server_default="0")
    )
    # Runs in flight during the upgrade: count what their items already finished.
    op.execute(
        "UPDATE runs SET items_done = (SELECT count(*) FROM run_items "
        "WHERE run_items.run_id = runs.id "
        "AND run_items.status IN ('succeeded', 'degraded', 'failed', 'dead'))"
    )


def downgrade() -> None:
    op.drop_column("runs", "items_done")
