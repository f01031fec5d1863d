"""sales.buyer_email, indexed: the cross-source match looks a buyer up instead of reading
every recent sale of the same amount (it ran on each webhook, under the write lock)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 19:40:00.000000
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sales", sa.Column("buyer_email", sa.String(length=320), nullable=True))
    conn = op.get_bind()
    sales = sa.table(
        "sales", sa.column("id", sa.Integer), sa.column("buyer"), sa.column("buyer_email")
    )
    rows = conn.execute(sa.select(sales.c.id, sales.c.buyer)).all()
    for sale_id, buyer in rows:
        data = json.loads(buyer) if isinstance(buyer, str) else buyer or {}
        email = str((data or {}).get("email") or "").strip().lower()[:320] or None
        if email:
            conn.execute(sa.update(sales).where(sales.c.id == sale_id).values(buyer_email=email))
    op.create_index("ix_sales_buyer_email", "sales", ["buyer_email", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_sales_buyer_email", "sales")
    op.drop_column("sales", "buyer_email")
