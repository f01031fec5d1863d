"""/healthz and /metrics: what an operator (or Fly's check) reads, and what they never say."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
from datetime import timedelta
from pathlib import Path

from starlette.testclient import TestClient

from app import create_app
from invoicing import health, queue
from invoicing.runtime import build_runtime
from invoicing.settings import load_settings
from invoicing.store import make_engine, write
from tests.conftest import (
    SECRET,
    Inbox,
    Service,
    checkout_event,
    children,
    post_event,
    wait_until,
)


def _sample(page: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text page (labels in any order)."""
    for line in page.splitlines():
        if line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if found == labels:
            return float(match.group(3))
    raise AssertionError(f"no sample {name}{labels} in:\n{page}")


def test_a_working_service_reports_its_worker_queue_and_counts(
    service_env: dict[str, str], smtp: tuple[Inbox, str], services: list[Service], tmp_path: Path
) -> None:
    """Both processes count (the web server what it received, the worker what it issued and
    how long each step took); neither page names a buyer, an email, an amount or a secret."""
    inbox, smtp_url = smtp
    env = {**service_env, "EMAIL_URL": smtp_url, "ZAPIER_TOKEN": "zap-secret-token-123"}
    service = Service(env, tmp_path).start()
    services.append(service)
    with service.client() as client:
        for n in range(3):
            post_event(client, checkout_event(n, name="Léa Martin", email="lea@example.org"))
        post_event(client, checkout_event(0))  # Stripe's retry: a duplicate
        post_event(client, checkout_event(9), secret="whsec_someone_else")
        client.post("/webhooks/nowhere", content=b"{}")
        inbox.wait_for(3)

        def settled() -> bool:
            state = client.get("/healthz").json()
            return state["queue_depth"] == 0 and state["worker_looked_for_work_seconds_ago"] < 5

        wait_until(settled, what="the queue to empty")
        answer = client.get("/healthz")
        page = client.get("/metrics")
    assert answer.status_code == 200
    state = answer.json()
    assert state["status"] == "ok" and state["database"] == "ok" and state["worker"] == "running"
    assert 0 <= state["worker_heartbeat_seconds_ago"] < 10  # within a lease
    assert state["dead_letters"] == 0 and state["oldest_pending_seconds"] is None

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain")
    text = page.text
    received = "invoicehook_webhooks_received_total"
    assert _sample(text, received, source="stripe", outcome="accepted") == 3
    assert _sample(text, received, source="stripe", outcome="duplicate") == 1
    assert _sample(text, received, source="stripe", outcome="unauthorized") == 1
    assert _sample(text, received, source="unknown", outcome="unknown_source") == 1
    assert _sample(text, "invoicehook_documents_issued_total", kind="invoice") == 3
    for step in ("issue", "store", "email"):
        assert _sample(text, "invoicehook_step_seconds_count", step=step) == 3
        assert _sample(text, "invoicehook_step_seconds_sum", step=step) > 0
    assert _sample(text, "invoicehook_jobs", state="done") >= 3
    assert _sample(text, "invoicehook_queue_depth") == 0
    assert _sample(text, "invoicehook_healthy") == 1
    for secret in (
        "Léa",
        "lea@example.org",
        "19900",
        "199.00",
        SECRET,
        "zap-secret-token-123",
        "nowhere",
    ):
        assert secret not in text and secret not in json.dumps(state), secret


def test_failures_are_counted_by_the_step_that_failed(
    service_env: dict[str, str], smtp: tuple[Inbox, str], services: list[Service], tmp_path: Path
) -> None:
    inbox, smtp_url = smtp
    inbox.refuse_with = "451 4.3.0 Mailbox busy"
    env = {**service_env, "EMAIL_URL": smtp_url, "JOB_MAX_ATTEMPTS": "2"}
    service = Service(env, tmp_path).start()
    services.append(service)
    with service.client() as client:
        post_event(client, checkout_event(1))
        wait_until(lambda: client.get("/healthz").json()["dead_letters"] == 1, what="a dead letter")
        state = client.get("/healthz")
        text = client.get("/metrics").text
    # A dead letter needs a person, not a restart: the check stays green, and says so.
    assert state.status_code == 200 and state.json()["dead_letters"] == 1
    assert _sample(text, "invoicehook_job_failures_total", step="email") == 2
    assert _sample(text, "invoicehook_jobs", state="dead") == 1


def test_a_stuck_worker_turns_the_check_red_and_is_restarted(
    service_env: dict[str, str], smtp: tuple[Inbox, str], services: list[Service], tmp_path: Path
) -> None:
    """The worker process is there but does nothing (stopped here with SIGSTOP, as a process
    wedged in a call would be): once its heartbeat is older than a lease, 503, so Fly routes
    webhooks elsewhere; and since Fly restarts nothing for a failing check, the service
    kills the stuck child and starts another, which sends the sale it held."""
    inbox, smtp_url = smtp
    env = {**service_env, "EMAIL_URL": smtp_url, "JOB_LEASE_SECONDS": "2"}
    service = Service(env, tmp_path).start()
    services.append(service)
    assert service.proc is not None
    web = service.proc.pid
    (worker,) = children(web)
    with service.client() as client:
        wait_until(lambda: client.get("/healthz").json()["worker"] == "running", what="a beat")
        os.kill(worker, signal.SIGSTOP)
        try:
            post_event(client, checkout_event(1))
            wait_until(lambda: client.get("/healthz").status_code == 503, 15, what="a red check")
            red = client.get("/healthz").json()
            assert _sample(client.get("/metrics").text, "invoicehook_healthy") == 0
            wait_until(lambda: children(web) not in ([], [worker]), 20, what="a new worker")
            wait_until(lambda: client.get("/healthz").status_code == 200, 15, what="green again")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGCONT)
        assert len(inbox.wait_for(1)) == 1
    # Read while stuck, or a moment later while the watch had just killed it: both red.
    assert red["status"] == "unhealthy" and red["worker"] in ("stuck", "stopped")
    if red["worker"] == "stuck":
        assert "heartbeat" in red["problem"] and "2 s" in red["problem"]
    assert "the worker is stuck (the worker's last heartbeat is" in service.log()


def test_the_database_unreachable_is_a_503_that_says_so(tmp_path: Path) -> None:
    from tests.conftest import write_config

    env = {
        "INVOICEHOOK_CONFIG": str(write_config(tmp_path)),
        "DATABASE_URL": f"sqlite:///{tmp_path}/ih.db",
        "STORAGE_URL": f"file://{tmp_path}/pdf",
    }
    rt = build_runtime(load_settings(env))
    gone = dataclasses.replace(rt, engine=make_engine("postgresql://nobody@127.0.0.1:9/none"))
    with TestClient(create_app(rt.settings, runtime=gone, start_worker=False)) as client:
        answer = client.get("/healthz")
        text = client.get("/metrics").text
    assert answer.status_code == 503
    assert answer.json()["database"] == "unreachable"
    assert "the database is unreachable (OperationalError)" in answer.json()["problem"]
    assert _sample(text, "invoicehook_database_up") == 0


def test_queue_ages_dead_letters_and_a_worker_gone(tmp_path: Path) -> None:
    from tests.conftest import write_config

    env = {
        "INVOICEHOOK_CONFIG": str(write_config(tmp_path)),
        "DATABASE_URL": f"sqlite:///{tmp_path}/ih.db",
        "STORAGE_URL": f"file://{tmp_path}/pdf",
    }
    rt = build_runtime(load_settings(env))
    now = rt.clock()
    with write(rt.engine) as conn:
        queue.enqueue(conn, queue.JobKind.INVOICE, 1, now=now - timedelta(hours=1))
        queue.enqueue(conn, queue.JobKind.INVOICE, 2, now=now - timedelta(minutes=1))
    dead = queue.claim(rt.engine, "w", 10, clock=lambda: now)
    assert dead is not None
    queue.fail(rt.engine, dead, "boom", permanent=True, max_attempts=1, base=1, cap=1)

    def look(**worker: object) -> health.Health:
        options: dict[str, object] = {"worker_pid": 4242, "worker_alive": True}
        options.update(worker)
        return health.check(
            rt.engine,
            now,
            worker_age_seconds=1.0,
            lease_seconds=10,
            **options,  # type: ignore[arg-type]
        )

    starting = look()
    assert starting.ok and starting.worker_state == "starting"
    assert starting.jobs == {"pending": 1, "dead": 1} and starting.depth == 1
    assert round(starting.oldest_pending_seconds or 0) == 60
    assert starting.as_json()["dead_letters"] == 1

    gone = look(worker_alive=False)
    assert not gone.ok and gone.problem == "the worker process is not running"
    web_only = look(worker_pid=None)
    assert web_only.ok and web_only.worker_state == "none"
    never_beat = health.check(
        rt.engine, now, worker_pid=4242, worker_alive=True, worker_age_seconds=30, lease_seconds=10
    )
    assert never_beat.worker_state == "stuck" and "first 10 s" in (never_beat.problem or "")
