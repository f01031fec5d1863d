"""Group commit: webhooks waiting together share one transaction, and each is answered
only once it is committed; one bad request never takes the others down with it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection

from invoicing.group_commit import GroupCommit
from invoicing.store import events, make_engine, migrate
from tests.conftest import db_rows


def _engine(tmp_path: Path) -> Any:
    engine = make_engine(f"sqlite:///{tmp_path}/ih.db")
    migrate(engine)
    return engine


def _insert(n: int) -> Any:
    def work(conn: Connection) -> int:
        conn.execute(
            text(
                "INSERT INTO events (id, source, type, raw, received_at, outcome) "
                "VALUES (:id, 'stripe', 't', '{}', CURRENT_TIMESTAMP, 'accepted')"
            ),
            {"id": f"evt_{n}"},
        )
        return n

    return work


def test_requests_waiting_together_share_a_transaction(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    intake = GroupCommit(engine).start()

    async def burst() -> list[int]:
        return list(await asyncio.gather(*(intake.submit(_insert(n)) for n in range(200))))

    try:
        answers = asyncio.run(burst())
    finally:
        intake.stop()
    assert answers == list(range(200))
    assert sorted(row.id for row in db_rows(f"sqlite:///{tmp_path}/ih.db", events)) == sorted(
        f"evt_{n}" for n in range(200)
    )
    assert intake.requests == 200
    assert intake.batches < 200 / 4  # they did share: a few transactions, not 200


def test_one_failing_request_leaves_the_rest_of_its_batch(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    intake = GroupCommit(engine).start()

    def broken(conn: Connection) -> None:
        conn.execute(text("INSERT INTO events (id) VALUES ('half')"))  # NOT NULL columns
        raise AssertionError("not reached")

    async def burst() -> list[Any]:
        jobs = [intake.submit(_insert(1)), intake.submit(broken), intake.submit(_insert(2))]
        return list(await asyncio.gather(*jobs, return_exceptions=True))

    try:
        first, failed, third = asyncio.run(burst())
    finally:
        intake.stop()
    assert (first, third) == (1, 2)
    assert isinstance(failed, Exception) and "NOT NULL" in str(failed)
    ids = sorted(row.id for row in db_rows(f"sqlite:///{tmp_path}/ih.db", events))
    assert ids == ["evt_1", "evt_2"]  # and nothing of the broken one


def test_a_commit_that_fails_answers_nobody_with_success(tmp_path: Path) -> None:
    """The database refuses the commit (a full disk, say; played here by a commit hook
    that raises): every request of the batch gets the error, so none is acknowledged and
    the senders retry, and nothing of the batch is kept."""
    from sqlalchemy import event

    engine = _engine(tmp_path)

    def refuse(conn: Any) -> None:
        raise OSError(28, "No space left on device")

    event.listen(engine, "commit", refuse)
    intake = GroupCommit(engine).start()

    async def burst() -> list[Any]:
        jobs = (intake.submit(_insert(n)) for n in range(5))
        return list(await asyncio.gather(*jobs, return_exceptions=True))

    try:
        results = asyncio.run(burst())
    finally:
        intake.stop()
        event.remove(engine, "commit", refuse)
    assert all(isinstance(r, OSError) for r in results), results
    assert db_rows(f"sqlite:///{tmp_path}/ih.db", events) == []


@pytest.mark.parametrize("count", [1, 3])
def test_stop_finishes_what_is_queued(tmp_path: Path, count: int) -> None:
    engine = _engine(tmp_path)
    intake = GroupCommit(engine).start()

    async def submit() -> list[int]:
        return list(await asyncio.gather(*(intake.submit(_insert(n)) for n in range(count))))

    assert asyncio.run(submit()) == list(range(count))
    intake.stop()
    assert not intake._thread.is_alive()


def test_a_shortcut_that_fails_is_rolled_back_and_the_batch_run_one_by_one(
    tmp_path: Path,
) -> None:
    """``together`` wrote a row, then raised: none of what it wrote is kept, and every
    request of the batch is recorded by its own work, answered once."""
    engine = _engine(tmp_path)
    calls: list[int] = []

    def together(conn: Connection, payloads: list[Any]) -> dict[int, Any]:
        calls.append(len(payloads))
        _insert(999)(conn)
        raise RuntimeError("the shortcut broke")

    intake = GroupCommit(engine, together=together).start()

    async def burst() -> list[int]:
        return list(await asyncio.gather(*(intake.submit(_insert(n), n) for n in range(20))))

    try:
        answers = asyncio.run(burst())
    finally:
        intake.stop()
    assert answers == list(range(20))
    assert calls  # it was tried
    ids = sorted(row.id for row in db_rows(f"sqlite:///{tmp_path}/ih.db", events))
    assert ids == sorted(f"evt_{n}" for n in range(20))  # and evt_999 rolled back


def test_a_shortcut_answers_what_it_took_and_leaves_the_rest(tmp_path: Path) -> None:
    engine = _engine(tmp_path)

    def together(conn: Connection, payloads: list[Any]) -> dict[int, Any]:
        taken = {i: f"together {p}" for i, p in enumerate(payloads) if p % 2 == 0}
        for i in taken:
            _insert(payloads[i])(conn)
        return taken

    intake = GroupCommit(engine, together=together).start()

    async def burst() -> list[Any]:
        return list(await asyncio.gather(*(intake.submit(_insert(n), n) for n in range(10))))

    try:
        answers = asyncio.run(burst())
    finally:
        intake.stop()
    assert answers == [f"together {n}" if n % 2 == 0 else n for n in range(10)]
    ids = sorted(row.id for row in db_rows(f"sqlite:///{tmp_path}/ih.db", events))
    assert ids == sorted(f"evt_{n}" for n in range(10))
