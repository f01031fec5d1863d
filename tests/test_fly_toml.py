"""fly.toml (one machine, SQLite on a volume) and fly.postgres.toml (several machines,
PostgreSQL and S3) agree with the code: the port, the health check, the volume and the
paths in [env], the seller's file, the shutdown time and the limits. Every number is read
from the code or the Dockerfile, not written here."""

from __future__ import annotations

import ast
import inspect
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from app import create_app
from invoicing.settings import Settings, load_settings
from invoicing.setup_init import next_steps
from invoicing.supervisor import WorkerProcess
from tests.conftest import ROOT, write_config
from tests.dockerfile import exec_form, seconds, stages

SINGLE = ROOT / "fly.toml"
SEVERAL = ROOT / "fly.postgres.toml"
FILES = [SINGLE, SEVERAL]


def fly(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def cmd() -> list[str]:
    return exec_form(stages()[-1].last("CMD") or "[]")


def serve_keywords() -> dict[str, Any]:
    """The literal keyword arguments `invoicehook serve` passes to uvicorn.run (in
    ``cli.serve``, which ``cmd_serve`` and the ack benchmark call)."""
    source = inspect.getsource(__import__("invoicing.cli", fromlist=["serve"]).serve)
    for node in ast.walk(ast.parse(source.lstrip())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "run":
            return {
                k.arg: k.value.value
                for k in node.keywords
                if k.arg and isinstance(k.value, ast.Constant)
            }
    raise AssertionError("cli.serve does not call uvicorn.run")


def settings_on(path: Path, tmp_path: Path, **extra: str) -> Settings:
    env = {k: str(v) for k, v in fly(path).get("env", {}).items()}
    return load_settings({**env, **extra, "INVOICEHOOK_CONFIG": str(write_config(tmp_path))})


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_the_port_is_the_one_serve_listens_on(path: Path) -> None:
    """internal_port is the CMD's --port on every interface (Fly's proxy is outside)."""
    command = cmd()
    port = int(command[command.index("--port") + 1])
    assert command[command.index("--host") + 1] == "0.0.0.0"  # noqa: S104 (Fly needs it)
    assert fly(path)["http_service"]["internal_port"] == port


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_the_health_check_is_a_route_that_answers_200(path: Path, tmp_path: Path) -> None:
    checks = fly(path)["http_service"]["checks"]
    assert checks, "no [[http_service.checks]]"
    settings = load_settings(
        {
            "INVOICEHOOK_CONFIG": str(write_config(tmp_path)),
            "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
            "STORAGE_URL": f"file://{tmp_path}/invoices",
        }
    )
    app = create_app(settings, start_worker=False)
    paths = {r.path for r in app.routes if isinstance(r, Route) and "GET" in (r.methods or ())}
    with TestClient(app) as client:
        for check in checks:
            assert check["method"].upper() == "GET"
            assert check["path"] in paths
            assert client.get(check["path"]).status_code == 200
            # A check ends before the next one starts; the first waits for start-up.
            assert seconds(check["timeout"]) < seconds(check["interval"])
            assert seconds(check["grace_period"]) >= seconds(check["timeout"])


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_kill_timeout_covers_the_requests_then_the_jobs_in_hand(path: Path) -> None:
    """On kill_signal, uvicorn waits for open requests (timeout_graceful_shutdown), then the
    lifespan stops the worker, which may take WorkerProcess's stop_timeout to finish its job:
    Fly must wait for both before it kills the machine (at most 300 s)."""
    config = fly(path)
    assert config["kill_signal"] in ("SIGINT", "SIGTERM")  # uvicorn drains on both
    graceful = serve_keywords()["timeout_graceful_shutdown"]
    stop = inspect.signature(WorkerProcess).parameters["stop_timeout"].default
    assert isinstance(graceful, int | float) and isinstance(stop, int | float)
    assert graceful + stop < seconds(config["kill_timeout"]) <= 300


def test_the_volume_holds_the_database_and_the_pdfs(tmp_path: Path) -> None:
    """One machine: SQLite and the PDFs on the mount, which the entrypoint hands to the
    service's user; [env] is valid settings."""
    config = fly(SINGLE)
    (mount,) = config["mounts"]
    destination = Path(mount["destination"])
    settings = settings_on(SINGLE, tmp_path)
    database = Path(urlsplit(settings.database_url).path.removeprefix("/"))
    assert settings.database_url.startswith("sqlite:////")
    assert database.is_relative_to(destination), (database, destination)
    storage = urlsplit(settings.storage_url)
    assert storage.scheme == "file"
    assert Path(storage.netloc + storage.path).is_relative_to(destination)
    assert f"-d {destination} ]" in (ROOT / "entrypoint.sh").read_text(encoding="utf-8")


def test_several_machines_share_nothing_local(tmp_path: Path) -> None:
    """No volume (it would belong to one machine), and no SQLite or folder in [env]: the
    database and the PDFs come from secrets, PostgreSQL and S3."""
    config = fly(SEVERAL)
    assert "mounts" not in config
    env = config.get("env", {})
    assert "DATABASE_URL" not in env and "STORAGE_URL" not in env
    settings = settings_on(SEVERAL, tmp_path, DATABASE_URL="postgresql://u@db.internal:5432/ih")
    assert settings.database_url.startswith("postgresql://")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_the_sellers_file_comes_from_a_secret_where_the_image_reads_it(path: Path) -> None:
    """[[files]] writes the INVOICEHOOK_TOML secret where INVOICEHOOK_CONFIG points, and
    `invoicehook init` tells the seller to set that very secret."""
    (entry,) = fly(path)["files"]
    assert set(entry) == {"guest_path", "secret_name"}
    assert entry["guest_path"] == stages()[-1].env()["INVOICEHOOK_CONFIG"]
    lines = next_steps(Path("invoicehook.toml"), {})
    assert any(line.startswith(f"fly secrets set {entry['secret_name']}=") for line in lines)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_the_machine_and_its_limits_fit_the_settings(path: Path, tmp_path: Path) -> None:
    """The smallest machine (256 MB), a WORKER_CONCURRENCY the settings accept and no more
    than their default, and request limits Fly's proxy applies before uvicorn's own."""
    config = fly(path)
    (vm,) = config["vm"]
    assert (vm["memory"], vm["cpu_kind"], vm["cpus"]) == ("256mb", "shared", 1)
    settings = settings_on(path, tmp_path, DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite")
    workers = int(config["env"]["WORKER_CONCURRENCY"])
    assert settings.worker_concurrency == workers
    assert 1 <= workers <= Settings.worker_concurrency  # the default is the ceiling
    limits = config["http_service"]["concurrency"]
    assert limits["type"] == "requests"
    assert 0 < limits["soft_limit"] < limits["hard_limit"]
    uvicorn_limit = serve_keywords().get("limit_concurrency")
    if uvicorn_limit is not None:  # uvicorn answers 503 past it: Fly must hold them first
        assert limits["hard_limit"] <= uvicorn_limit


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_machines_stay_up_for_background_jobs(path: Path) -> None:
    """Background jobs are not traffic to Fly's proxy: a machine it stopped would leave them
    waiting, so machines stay up."""
    service = fly(path)["http_service"]
    assert service["auto_stop_machines"] in ("off", False)
    assert fly(path)["build"]["dockerfile"] == "Dockerfile"
