"""sales.created_at indexed: the cross-source match looks only at recent sales

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 19:30:00.000000
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_sales_created_at", "sales", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_sales_created_at", "sales")
