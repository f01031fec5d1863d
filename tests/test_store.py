"""The schema: what the migrations build is what the code's tables say."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from invoicing.records import HOT
from invoicing.store import make_engine, metadata, migrate


def test_migrations_build_the_tables_the_code_uses(database_url: str) -> None:
    """Every column and index of store.py (the index on sales.created_at included) comes
    from a migration: a fresh database and an upgraded one are the same."""
    engine = make_engine(database_url)
    migrate(engine)
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert [d for d in differences if d[0] != "remove_table"] == []


def test_recent_sales_are_found_through_the_index(tmp_path: str) -> None:
    """Matching a Zapier order with Stripe's looks at recent sales only, through the index,
    not by reading every sale ever recorded (it runs under the write lock)."""
    engine = make_engine(f"sqlite:///{tmp_path}/invoicehook.db")
    migrate(engine)
    query = HOT[False].cross_recent.compile(engine)
    now = datetime.now(UTC)
    params = {
        "total": 100,
        "currency": "EUR",
        "source": "zapier",
        "since": now,
        "paid_from": now,
        "paid_to": now,
    }
    values = query.construct_params(params)
    with engine.connect() as conn:
        plan = conn.exec_driver_sql(
            f"EXPLAIN QUERY PLAN {query}", tuple(values[name] for name in query.positiontup or ())
        ).all()
    steps = " / ".join(str(row[-1]) for row in plan)
    assert "ix_sales_created_at" in steps and "SCAN sales" not in steps, steps
