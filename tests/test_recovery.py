"""The machine dies, or is told to stop, in the middle of a burst of sales: after the restart
every sale is emailed once, soon, and the numbers stay one gap-free series."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from invoicing import queue
from invoicing.runtime import Runtime
from invoicing.store import invoices, jobs, make_engine, migrate
from tests.conftest import (
    Inbox,
    Service,
    all_jobs_done,
    attachment,
    checkout_event,
    children,
    db_rows,
    post_event,
    wait_until,
)

BURST = 40


def _burst(service: Service, count: int = BURST) -> None:
    with service.client() as client:
        for n in range(count):
            assert post_event(client, checkout_event(n)).json()["status"] == "accepted"


def _every_sale_once(url: str, inbox: Inbox, count: int = BURST) -> None:
    wait_until(lambda: all_jobs_done(url), what="every job done")
    assert len(inbox.messages) == count
    assert len({m["Message-ID"] for m in inbox.messages}) == count
    assert len({attachment(m)[1] for m in inbox.messages}) == count
    assert sorted(r.seq for r in db_rows(url, invoices)) == list(range(1, count + 1))


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_kill_9_mid_burst_then_every_sale_is_emailed_within_10_s_of_the_restart(
    database: str,
    request: pytest.FixtureRequest,
    service_env: dict[str, str],
    smtp: tuple[Inbox, str],
    services: list[Service],
    tmp_path: Path,
) -> None:
    """With the default lease. SQLite: the new boot gives the dead one's jobs back at once.
    PostgreSQL: the dead worker's heartbeat stops, and its leases (10 s) run out."""
    inbox, smtp_url = smtp
    env = {**service_env, "EMAIL_URL": smtp_url}
    if database == "postgresql":
        env["DATABASE_URL"] = request.getfixturevalue("pg_url")
    url = env["DATABASE_URL"]
    inbox.hold.clear()  # the mail server hangs: the worker has jobs in hand when it dies
    first = Service(env, tmp_path).start()
    services.append(first)
    _burst(first)
    wait_until(
        lambda: sum(j.state == "running" for j in db_rows(url, jobs)) >= 2, what="jobs in hand"
    )
    first.crash()
    assert inbox.messages == []
    inbox.hold.set()

    restarted = time.monotonic()
    second = Service(env, tmp_path).start()
    services.append(second)
    inbox.wait_for(BURST, timeout=10)
    assert time.monotonic() - restarted <= 10
    _every_sale_once(url, inbox)


def test_sigterm_mid_burst_loses_nothing(
    service_env: dict[str, str], smtp: tuple[Inbox, str], services: list[Service], tmp_path: Path
) -> None:
    """Fly's kill_signal while sales arrive and emails are being sent: the jobs in hand are
    finished, the rest wait in the database, and the next boot sends them, once each."""
    inbox, smtp_url = smtp
    env = {**service_env, "EMAIL_URL": smtp_url}
    url = env["DATABASE_URL"]
    first = Service(env, tmp_path).start()
    services.append(first)
    _burst(first, 20)
    wait_until(lambda: len(inbox.messages) >= 1, what="the first email")
    assert first.proc is not None
    first.proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then raises the signal again for its parent to see.
    assert first.proc.wait(60) in (0, -signal.SIGTERM), first.log()
    sent_before = len(inbox.messages)
    assert all(j.state in ("pending", "done") for j in db_rows(url, jobs))  # none left running

    second = Service(env, tmp_path).start()
    services.append(second)
    inbox.wait_for(20, timeout=30)
    _every_sale_once(url, inbox, 20)
    assert sent_before <= 20


def test_a_restarted_worker_child_gives_back_its_dead_predecessors_jobs(
    service_env: dict[str, str], smtp: tuple[Inbox, str], services: list[Service], tmp_path: Path
) -> None:
    """Out of memory kills only the worker child: the web process starts another, which is
    alone on the database, so it takes the jobs back at once rather than after a lease."""
    inbox, smtp_url = smtp
    env = {**service_env, "EMAIL_URL": smtp_url, "JOB_LEASE_SECONDS": "600"}
    url = env["DATABASE_URL"]
    inbox.hold.clear()
    service = Service(env, tmp_path).start()
    services.append(service)
    _burst(service, 5)
    wait_until(lambda: any(j.state == "running" for j in db_rows(url, jobs)), what="a job held")
    assert service.proc is not None
    (worker,) = children(service.proc.pid)
    os.kill(worker, signal.SIGKILL)
    inbox.hold.set()
    inbox.wait_for(5, timeout=30)  # a 600 s lease: only the release at start can explain it
    _every_sale_once(url, inbox, 5)


def test_a_second_worker_alive_keeps_its_claims(tmp_path: Path) -> None:
    """The release at start is for a worker alone on its SQLite file: one that finds
    another alive (a CLI drain, a second `work`) leaves the other's claims to the leases."""
    from invoicing.runtime import build_runtime
    from invoicing.settings import load_settings
    from invoicing.worker import Worker
    from tests.conftest import write_config

    env = {
        "INVOICEHOOK_CONFIG": str(write_config(tmp_path)),
        "DATABASE_URL": f"sqlite:///{tmp_path}/ih.db",
        "STORAGE_URL": f"file://{tmp_path}/pdf",
        "EMAIL_URL": f"file://{tmp_path}/out",
    }
    engine = make_engine(env["DATABASE_URL"])
    migrate(engine)
    with engine.begin() as conn:
        queue.enqueue(conn, queue.JobKind.INVOICE, 1)
        queue.enqueue(conn, queue.JobKind.INVOICE, 2)
    held = queue.claim(engine, "old-boot", 600)
    assert held is not None

    first = Worker(build_runtime(load_settings(env)))
    assert first._take_boot_lock(alone_releases=True) == 1  # alone: the old boot's claim
    assert {j.state for j in db_rows(env["DATABASE_URL"], jobs)} == {"pending"}
    again = queue.claim(engine, "first", 600)
    assert again is not None
    second = Worker(build_runtime(load_settings(env)))
    assert second._take_boot_lock(alone_releases=True) == 0  # the first lives: nothing freed
    states = sorted(j.state for j in db_rows(env["DATABASE_URL"], jobs))
    assert states == ["pending", "running"]
    first._stop_heartbeat()
    second._stop_heartbeat()


def test_the_heartbeat_keeps_a_slow_jobs_lease_and_a_dead_one_loses_it(tmp_path: Path) -> None:
    """A job that runs longer than its lease keeps it while its worker beats; once the beats
    stop, another worker may take it, and the slow one's checkpoint then stops it."""
    from invoicing.runtime import build_runtime
    from invoicing.settings import load_settings
    from invoicing.worker import Worker
    from tests.conftest import write_config

    env = {
        "INVOICEHOOK_CONFIG": str(write_config(tmp_path)),
        "DATABASE_URL": f"sqlite:///{tmp_path}/ih.db",
        "STORAGE_URL": f"file://{tmp_path}/pdf",
        "EMAIL_URL": f"file://{tmp_path}/out",
        "JOB_LEASE_SECONDS": "1",
    }
    rt = build_runtime(load_settings(env))
    with rt.engine.begin() as conn:
        queue.enqueue(conn, queue.JobKind.INVOICE, 1)
    worker = Worker(rt)
    job = queue.claim(rt.engine, rt.worker_id, 1)
    assert job is not None
    worker._start_heartbeat()
    time.sleep(2.5)  # more than two leases
    assert queue.claim(rt.engine, "other", 1) is None  # still ours: the heartbeat renewed it
    queue.renew(rt.engine, job, 1)  # the checkpoint before an email passes
    worker._stop_heartbeat()
    time.sleep(1.2)
    taken = queue.claim(rt.engine, "other", 1)
    assert taken is not None and taken.id == job.id
    with pytest.raises(queue.LeaseLost):
        queue.renew(rt.engine, job, 1)  # the slow worker must not send now


def test_a_worker_never_takes_back_its_own_job_whose_lease_ran_out(database_url: str) -> None:
    """A lease of a live worker runs out only while the database is away (its heartbeat
    renews every lease it holds), and its loop is then still waiting to record what it did:
    another loop of the same worker must not take the job and send its email again. Another
    worker may, once the lease is over."""
    from datetime import UTC, datetime, timedelta

    engine = make_engine(database_url)
    migrate(engine)
    start = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    with engine.begin() as conn:
        job_id = queue.enqueue(conn, queue.JobKind.INVOICE, 1, now=start)
    mine = "host_1:42:b00t%"  # LIKE's own characters in it, taken literally
    held = queue.claim(engine, mine, 10, clock=lambda: start)
    assert held is not None and held.id == job_id
    later = start + timedelta(seconds=30)
    assert queue.claim(engine, mine, 10, clock=lambda: later) is None
    assert queue.claim(engine, "host-1:42:b00tx", 10, clock=lambda: later) is not None
    engine.dispose()


def test_an_exclusive_job_waits_while_its_group_runs(database_url: str) -> None:
    """A ledger job is not handed out while another holds a live lease (the Sheet has one
    writer); the claim passes over it to the next job, and hands it out once the first is
    done. Claims racing from several threads never run two of the group at once."""
    import threading

    engine = make_engine(database_url)
    migrate(engine)
    with engine.begin() as conn:
        queue.enqueue(conn, queue.JobKind.LEDGER, 1)
        queue.enqueue(conn, queue.JobKind.LEDGER_REBUILD, queue.NO_SALE)
        queue.enqueue(conn, queue.JobKind.INVOICE, 2)
    first = queue.claim(engine, "w", 600)
    assert first is not None and first.kind == queue.JobKind.LEDGER
    passed = queue.claim(engine, "w", 600)
    assert passed is not None and passed.kind == queue.JobKind.INVOICE
    assert queue.claim(engine, "w", 600) is None  # the rebuild waits for the ledger job
    queue.complete(engine, first)
    rebuild = queue.claim(engine, "w", 600)
    assert rebuild is not None and rebuild.kind == queue.JobKind.LEDGER_REBUILD
    queue.complete(engine, rebuild)
    queue.complete(engine, passed)

    for round_ in range(5):
        with engine.begin() as conn:
            for n in range(3):
                queue.enqueue(conn, queue.JobKind.LEDGER, 100 * round_ + n)
            for n in range(3):
                queue.enqueue(conn, queue.JobKind.INVOICE, 100 * round_ + 50 + n)
        start = threading.Barrier(4)
        taken: list[queue.Job] = []

        def take(start: threading.Barrier = start, taken: list[queue.Job] = taken) -> None:
            start.wait()
            job = queue.claim(engine, "racer", 600)
            if job is not None:
                taken.append(job)

        threads = [threading.Thread(target=take) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(job.kind == queue.JobKind.LEDGER for job in taken) <= 1
        assert len(taken) >= 3  # the three invoices, at least, are not held back
        for done in taken:
            queue.complete(engine, done)
        while (left := queue.claim(engine, "racer", 600)) is not None:
            queue.complete(engine, left)
    engine.dispose()


def test_a_loop_waits_until_the_next_job_is_due_not_a_whole_poll(runtime: Runtime) -> None:
    """After the due jobs, a loop sleeps until the next pending job falls due (a retry's
    backoff), at most a poll; a job due already that the claim passed over (its exclusive
    group is busy) waits a poll, as nothing announces the end of the other's run."""
    from datetime import timedelta

    from invoicing.worker import Worker

    worker = Worker(runtime, poll_seconds=5.0)
    assert worker._run_while_due() == 5.0  # nothing pending
    now = runtime.clock()
    with runtime.engine.begin() as conn:
        queue.enqueue(conn, queue.JobKind.INVOICE, 1, run_after=now + timedelta(seconds=2))
    assert 1.0 < worker._run_while_due() <= 2.0
    with runtime.engine.begin() as conn:
        queue.enqueue(conn, queue.JobKind.LEDGER, 2, run_after=now)
        queue.enqueue(conn, queue.JobKind.LEDGER, 3, run_after=now)
    running = queue.claim(runtime.engine, "other", 600)
    assert running is not None and running.kind == queue.JobKind.LEDGER
    # The other ledger job waits for the first; the invoice is still due in under 2 s.
    assert 0.5 < worker._run_while_due() <= 2.0
    queue.complete(runtime.engine, running)
