"""The sale's payment method, and invoices indexed by issue date for a month's reads

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 09:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Unknown for the sales recorded before: the exports then show their source instead.
    op.add_column("sales", sa.Column("payment_method", sa.String(length=50), nullable=True))
    op.create_index("ix_invoices_issued_at", "invoices", ["issued_at"])


def downgrade() -> None:
    op.drop_index("ix_invoices_issued_at", "invoices")
    op.drop_column("sales", "payment_method")
