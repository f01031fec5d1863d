"""Held sales, lines a fetch leaves out, amounts as 64-bit integers on PostgreSQL

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 23:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

AMOUNTS = {"sales": ("subtotal", "tax", "total"), "invoices": ("subtotal", "tax", "total")}


def upgrade() -> None:
    op.add_column("sales", sa.Column("held_reason", sa.Text(), nullable=True))
    op.add_column("sales", sa.Column("extra_lines", sa.JSON(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        # A 32-bit integer caps an amount at 21 million euros in cents, and overflowed into
        # a 500 beyond; SQLite's INTEGER is 64-bit already.
        for table, columns in AMOUNTS.items():
            for column in columns:
                op.alter_column(table, column, type_=sa.BigInteger(), existing_nullable=False)
    # The ledger writer's lease is now the queue's own (one ledger job runs at a time).
    op.execute("DELETE FROM meta WHERE key = 'ledger_lock'")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, columns in AMOUNTS.items():
            for column in columns:
                op.alter_column(table, column, type_=sa.Integer(), existing_nullable=False)
    op.drop_column("sales", "extra_lines")
    op.drop_column("sales", "held_reason")
