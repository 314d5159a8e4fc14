"""A pipeline stage knows the run it follows (once: unique), a closed run records when it
handed off to its next stage, and a run when its task was sent — so a lost hand-off or a
lost send can be found and made good — and how often its items were replayed.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("follows_run_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("handed_off_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("replays", sa.Integer(), nullable=False, server_default="0"))
        batch.create_unique_constraint("uq_runs_follows_run_id", ["follows_run_id"])
        batch.create_foreign_key(
            "fk_runs_follows_run_id", "runs", ["follows_run_id"], ["id"], ondelete="SET NULL"
        )
    # Runs closed before this revision count as handed off: the sweeper leaves them alone.
    op.execute("UPDATE runs SET handed_off_at = finished_at WHERE finished_at IS NOT NULL")
    op.execute("UPDATE runs SET sent_at = created_at")


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint("fk_runs_follows_run_id", type_="foreignkey")
        batch.drop_constraint("uq_runs_follows_run_id", type_="unique")
        batch.drop_column("replays")
        batch.drop_column("sent_at")
        batch.drop_column("handed_off_at")
        batch.drop_column("follows_run_id")
