"""The schema: what the migrations build is what the code's tables say."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from invoicing.records import _hot
from invoicing.store import (
    CHECKPOINT_SECONDS,
    MIGRATIONS,
    make_engine,
    metadata,
    migrate,
    schema_head,
    schema_revision,
    write,
)
from tests.conftest import ROOT


def test_migrations_build_the_tables_the_code_uses(database_url: str) -> None:
    """Every column and index of store.py (the index on sales.created_at included) comes
    from a migration: a fresh database and an upgraded one are the same."""
    engine = make_engine(database_url)
    migrate(engine)
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert [d for d in differences if d[0] != "remove_table"] == []


def test_recent_sales_are_found_through_the_index(tmp_path: str) -> None:
    """Matching a Zapier order with Stripe's looks up the buyer's recent sales through the
    index, not every sale (nor every recent sale of the amount): it runs on each webhook,
    under the write lock."""
    engine = make_engine(f"sqlite:///{tmp_path}/invoicehook.db")
    migrate(engine)
    with engine.connect() as conn:
        query = _hot(conn).cross_recent.compile(engine)
    now = datetime.now(UTC)
    params = {
        "email": "lea@example.org",
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
    assert "ix_sales_buyer_email" in steps and "SCAN sales" not in steps, steps


def test_the_schema_head_is_alembics_and_a_database_there_is_left_alone(
    database_url: str,
) -> None:
    """``migrate`` skips Alembic for a database at ``schema_head()``: that head must be the
    one Alembic upgrades to, and a database behind it must still be upgraded."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_heads() == [schema_head()]

    engine = make_engine(database_url)
    assert schema_revision(engine) is None
    migrate(engine)
    assert schema_revision(engine) == schema_head()
    with write(engine) as conn:  # as if the newest migration had never run
        conn.execute(text("UPDATE alembic_version SET version_num = '0007'"))
        conn.execute(text("DROP INDEX ix_sales_buyer_email"))
        conn.execute(text("ALTER TABLE sales DROP COLUMN buyer_email"))
    migrate(engine)
    assert schema_revision(engine) == schema_head()
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert [d for d in differences if d[0] != "remove_table"] == []


def test_a_meta_key_is_claimed_by_one_of_two_racing_writers(database_url: str) -> None:
    """Both insert at once; the one whose insert waited must hear that it lost (the
    monthly pack is queued by whoever claims its key)."""
    import threading

    from invoicing import records

    engine = make_engine(database_url)
    migrate(engine)

    def race(key: str) -> list[bool]:
        won: list[bool] = []
        start = threading.Barrier(2)

        def claim() -> None:
            start.wait()
            with write(engine) as conn:
                won.append(records.claim_meta(conn, key, "x"))

        threads = [threading.Thread(target=claim) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sorted(won)

    for round_ in range(5):
        assert race(f"race:{round_}") == [False, True]


def test_the_web_process_migrates_in_a_child_and_never_loads_alembic(tmp_path: Path) -> None:
    """Alembic's 8 MB would stay for weeks in the long-lived web process: it migrates a new
    database in a short-lived child instead, and a database behind fails with a clear line."""
    script = (
        "import sys\n"
        "from invoicing.store import make_engine, migrate, schema_head, schema_revision\n"
        f"engine = make_engine('sqlite:///{tmp_path}/fresh.db')\n"
        "migrate(engine, apart=True)\n"
        "assert schema_revision(engine) == schema_head()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

    (tmp_path / "junk.db").write_text("not a database")
    engine = make_engine(f"sqlite:///{tmp_path}/junk.db")
    with pytest.raises(Exception, match="file is not a database"):
        migrate(engine, apart=True)


def test_sales_recorded_before_0008_get_their_buyer_email(tmp_path: Path) -> None:
    """The migration fills sales.buyer_email from each sale's buyer, so a Zapier order of
    a buyer Stripe told of before the upgrade is still matched."""
    url = f"sqlite:///{tmp_path}/old.db"
    engine = make_engine(url)
    migrate(engine)
    with write(engine) as conn:
        conn.execute(text("DROP INDEX ix_sales_buyer_email"))
        conn.execute(text("ALTER TABLE sales DROP COLUMN buyer_email"))
        conn.execute(text("UPDATE alembic_version SET version_num = '0007'"))
        conn.execute(
            text(
                "INSERT INTO sales (payment_key, source, event_id, status, paid_at, currency,"
                " subtotal, tax, total, buyer, tax_lines, created_at, kind) VALUES"
                " ('cs_1', 'stripe', 'evt_1', 'invoiced', CURRENT_TIMESTAMP, 'EUR', 100, 0,"
                " 100, :buyer, '[]', CURRENT_TIMESTAMP, 'sale')"
            ),
            {"buyer": '{"name": "Léa", "email": " Lea@Example.org "}'},
        )
    migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT buyer_email FROM sales")).scalar() == "lea@example.org"


def test_the_wal_is_checkpointed_by_a_thread_not_by_a_commit(tmp_path: Path) -> None:
    """Commits never checkpoint (that fsync used to hold the write lock), and the WAL
    still does not grow without end: the checkpointer backfills it, so the next writes
    reuse it from the start."""
    engine = make_engine(f"sqlite:///{tmp_path}/ih.db")
    migrate(engine)
    wal = tmp_path / "ih.db-wal"
    blob = "x" * 3000

    def fill(start: int) -> None:  # ~1,500 pages: past SQLite's own 1,000-page checkpoint
        for n in range(start, start + 1500):
            with write(engine) as conn:
                conn.execute(
                    text(
                        "INSERT INTO events (id, source, type, raw, received_at, outcome)"
                        " VALUES (:id, 's', 't', :raw, CURRENT_TIMESTAMP, 'accepted')"
                    ),
                    {"id": f"evt_{n}", "raw": blob},
                )

    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    fill(0)
    first = wal.stat().st_size
    assert first > 1000 * 4096  # no commit checkpointed it
    time.sleep(CHECKPOINT_SECONDS * 3)  # the checkpointer's turn
    fill(1500)
    assert wal.stat().st_size < first * 1.2  # reused from the start, not doubled
    engine.dispose()
