"""Refunds as sales of kind "refund", and credit notes citing the invoice they credit

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 17:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sales", sa.Column("kind", sa.String(20), nullable=False, server_default="sale"))
    # A refund names the payment it gives money back on; the sale is found when it is handled.
    op.add_column("sales", sa.Column("refunds_payment", sa.String(255), nullable=True))
    op.add_column("sales", sa.Column("refund_of", sa.Integer, nullable=True))
    op.add_column("sales", sa.Column("refund_basis", sa.String(20), nullable=True))
    op.create_index("ix_sales_refund_of", "sales", ["refund_of"])
    op.add_column("invoices", sa.Column("credited_number", sa.String(35), nullable=True))
    op.add_column(
        "invoices", sa.Column("credited_issued_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("invoices") as batch_op:
        batch_op.drop_column("credited_issued_at")
        batch_op.drop_column("credited_number")
    op.drop_index("ix_sales_refund_of", "sales")
    with op.batch_alter_table("sales") as batch_op:
        batch_op.drop_column("refund_basis")
        batch_op.drop_column("refund_of")
        batch_op.drop_column("refunds_payment")
        batch_op.drop_column("kind")
