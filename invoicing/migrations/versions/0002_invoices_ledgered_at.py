"""invoices.ledgered_at: when the invoice's row reached the ledger Sheet

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 15:50:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("invoices", sa.Column("ledgered_at", sa.DateTime(timezone=True), nullable=True))
    # The email status the row shows, so a later change (sent, skipped) is written over it.
    op.add_column("invoices", sa.Column("ledger_email_status", sa.String(20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("invoices") as batch_op:
        batch_op.drop_column("ledger_email_status")
        batch_op.drop_column("ledgered_at")
