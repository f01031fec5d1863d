"""What /metrics shows, in Prometheus' text format, through prometheus-client.

Two processes count: the web server (webhooks received) and its worker child (documents
issued, steps timed, jobs failed). prometheus-client's multiprocess mode sums them: each
process writes its counters to files in ``PROMETHEUS_MULTIPROC_DIR``, which ``serve`` makes
empty at start (``prepare_directory``) before either imports prometheus-client. What the
database knows (the queue, the worker's heartbeat) is read at each scrape instead of
counted, so every machine reports the same queue and a restart loses nothing.

Labels are closed sets (a source is one of sources.REGISTRY or "unknown", a step one of the
pipeline's): never a buyer's name, an email, an amount or a secret.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec

if TYPE_CHECKING:
    from invoicing.health import Health

ENV = "PROMETHEUS_MULTIPROC_DIR"
P = ParamSpec("P")
log = logging.getLogger("invoicehook.metrics")


@dataclass(frozen=True)
class _Instruments:
    received: Any
    issued: Any
    failures: Any
    step_seconds: Any


_made: _Instruments | None = None
_making = threading.Lock()


def _instruments() -> _Instruments:
    """Made at first use, not at import: prometheus-client reads PROMETHEUS_MULTIPROC_DIR
    when it is imported, and the CLI's commands that count nothing never load it. Under a
    lock: the worker's threads count at once, and a family registered twice is an error."""
    global _made
    if _made is None:
        with _making:
            if _made is None:
                _made = _make()
    return _made


def _make() -> _Instruments:
    from prometheus_client import Counter, Histogram

    return _Instruments(
        received=Counter(
            "invoicehook_webhooks_received",
            "Webhook posts answered, by source and outcome.",
            ["source", "outcome"],
        ),
        issued=Counter(
            "invoicehook_documents_issued", "Invoices and credit notes numbered.", ["kind"]
        ),
        failures=Counter(
            "invoicehook_job_failures",
            "Job attempts that failed (to be retried or dead), by the step that failed.",
            ["step"],
        ),
        step_seconds=Histogram(
            "invoicehook_step_seconds",
            "How long each step of a sale's job took.",
            ["step"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        ),
    )


def _never_fails(count: Callable[P, None]) -> Callable[P, None]:
    """A count that fails (its folder gone, a full disk) is logged, never raised: a metric
    must not fail a webhook or a sale's job."""

    @functools.wraps(count)
    def counting(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            count(*args, **kwargs)
        except Exception:
            log.exception("could not count %s", count.__name__)

    return counting


@_never_fails
def received(source: str, outcome: str) -> None:
    _instruments().received.labels(source=source, outcome=outcome).inc()


@_never_fails
def issued(kind: str) -> None:
    _instruments().issued.labels(kind=kind).inc()


@_never_fails
def step_took(step: str, seconds: float) -> None:
    _instruments().step_seconds.labels(step=step).observe(seconds)


_failed = threading.local()


def step_failed(step: str | None) -> None:
    """The step a job was in when it raised (the worker reads it to label the failure)."""
    _failed.step = step


@_never_fails
def failure(default: str) -> None:
    """Count a failed job attempt under the step it failed in, else under ``default``."""
    step = getattr(_failed, "step", None) or default
    _failed.step = None
    _instruments().failures.labels(step=step).inc()


def prepare_directory() -> str:
    """Point ``PROMETHEUS_MULTIPROC_DIR`` at an empty folder (a fresh temporary one unless
    set); called by ``serve`` before prometheus-client is imported. Children inherit it."""
    chosen = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if chosen:
        path = Path(chosen)
        if path.exists():
            for old in path.glob("*.db"):  # the counts of an earlier run of the service
                old.unlink()
        path.mkdir(parents=True, exist_ok=True)
    else:
        path = Path(tempfile.mkdtemp(prefix="invoicehook-metrics-"))
        os.environ[ENV] = str(path)
    return str(path)


def remove_directory(path: str) -> None:
    if Path(path).name.startswith("invoicehook-metrics-"):
        shutil.rmtree(path, ignore_errors=True)


def exposition(health: Health | None) -> tuple[bytes, str]:
    """The page: every process's counters, then the database's figures."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily

    if os.environ.get(ENV):
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        counted = generate_latest(registry)
    else:
        _instruments()  # every family listed, at zero, before its first count
        counted = generate_latest(REGISTRY)
    read = CollectorRegistry()
    if health is not None:
        families = []
        up = GaugeMetricFamily("invoicehook_database_up", "1 if the database answered.")
        up.add_metric([], 1.0 if health.database_ok else 0.0)
        families.append(up)
        if health.database_ok:
            jobs = GaugeMetricFamily(
                "invoicehook_jobs", "Jobs in the queue, by state.", labels=["state"]
            )
            for state, n in sorted(health.jobs.items()):
                jobs.add_metric([state], float(n))
            families.append(jobs)
            depth = GaugeMetricFamily("invoicehook_queue_depth", "Jobs pending or running.")
            depth.add_metric([], float(health.depth))
            families.append(depth)
            oldest = GaugeMetricFamily(
                "invoicehook_oldest_pending_seconds", "Age of the oldest pending job (0: none)."
            )
            oldest.add_metric([], health.oldest_pending_seconds or 0.0)
            families.append(oldest)
            if health.heartbeat_seconds is not None:
                beat = GaugeMetricFamily(
                    "invoicehook_worker_heartbeat_age_seconds",
                    "Seconds since this machine's worker last beat.",
                )
                beat.add_metric([], health.heartbeat_seconds)
                families.append(beat)
        stuck = GaugeMetricFamily("invoicehook_healthy", "1 when /healthz answers 200.")
        stuck.add_metric([], 1.0 if health.ok else 0.0)
        families.append(stuck)
        read.register(_Fixed(families))
    return counted + generate_latest(read), CONTENT_TYPE_LATEST


class _Fixed:
    """A collector of families already read (what the database said for this scrape)."""

    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> list[Any]:
        return self.families
