"""The image, proved without Docker: its install steps run in a temporary folder, and the
service it starts answers, stores and mails one sale.

What the Dockerfile says is read from it (tests/dockerfile.py): the files the builder
copies, its `uv sync`, the runtime stage's ENV, CMD, HEALTHCHECK and entrypoint. The folder
plays /app; the venv is made from uv.lock by the uv in .venv/bin (the one the Makefile pins),
so a runtime import of a dev-only package (pytest, httpx, moto…) stops this test.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, wait_until
from tests.dockerfile import Stage, exec_form, healthcheck, stages

UV = ROOT / ".venv" / "bin" / "uv"
needs_uv = pytest.mark.skipif(
    not UV.exists() and shutil.which("uv") is None, reason="uv is not installed (make install)"
)
APP = "/app"  # the image's WORKDIR, where the builder installs and the runtime runs
TOKEN = "image-test-token"


def builder() -> Stage:
    return stages()[0]


def runtime() -> Stage:
    return stages()[-1]


def uv_binary() -> str:
    return str(UV) if UV.exists() else str(shutil.which("uv"))


def copied_sources(stage: Stage) -> list[str]:
    """What `COPY src… dest` brings from the build context (not from another stage)."""
    found: list[str] = []
    for args in stage.all("COPY"):
        if args.startswith("--from"):
            continue
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        found += parts[:-1]
    return found


def uv_sync_commands(stage: Stage) -> list[list[str]]:
    commands = []
    for args in stage.all("RUN"):
        for part in args.split("&&"):
            words = shlex.split(part)
            if words[:2] == ["uv", "sync"]:
                commands.append(words)
    return commands


# --- the Dockerfile itself ----------------------------------------------------------------


def test_two_stages_on_the_slim_python() -> None:
    """A builder that syncs the lock without dev tools, a python:3.11-slim runtime."""
    first, last = builder(), runtime()
    assert len(stages()) == 2
    assert first.name == "builder"
    assert first.image == last.image == "python:3.11-slim"
    assert uv_sync_commands(first)[-1] == ["uv", "sync", "--frozen", "--no-dev"]
    assert all("--frozen" in c and "--no-dev" in c for c in uv_sync_commands(first))
    assert uv_sync_commands(last) == []  # the runtime installs nothing


def test_uv_is_the_makefiles() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    wanted = re.search(r"^UV_VERSION\s*:=\s*(\S+)", makefile, flags=re.MULTILINE)
    assert wanted is not None
    pins = [m for args in builder().all("RUN") for m in re.findall(r"uv==([\w.]+)", args)]
    assert pins == [wanted.group(1)]


def test_the_runtime_holds_the_venv_and_the_code_only() -> None:
    """From the builder: the venv and the packages that run; from the context: the
    entrypoint. No tests, no bench, no seller's file baked in."""
    from_builder = []
    for args in runtime().all("COPY"):
        parts = shlex.split(args)
        if parts[0] == "--from=builder":
            from_builder.append(parts[1])
    assert from_builder == [
        f"{APP}/.venv",
        f"{APP}/app.py",
        f"{APP}/invoicing",
        f"{APP}/integrations",
        f"{APP}/exports",
        f"{APP}/templates",
    ]
    assert copied_sources(runtime()) == ["entrypoint.sh"]
    every_source = " ".join(copied_sources(builder()) + copied_sources(runtime()))
    assert "invoicehook.toml" not in every_source
    assert "." not in copied_sources(builder())  # no `COPY . .`


def test_the_service_runs_as_its_own_user() -> None:
    """The runtime creates the invoicehook user, and the entrypoint execs CMD as it (after
    making a root-owned Fly volume its own), so the service never runs as root."""
    last = runtime()
    assert any("useradd" in a and "invoicehook" in a for a in last.all("RUN"))
    assert exec_form(last.last("ENTRYPOINT") or "[]") == [f"{APP}/entrypoint.sh"]
    script = (ROOT / "entrypoint.sh").read_text(encoding="utf-8")
    assert script.startswith("#!/bin/sh\n")
    assert os.access(ROOT / "entrypoint.sh", os.X_OK)
    commands = [line.strip() for line in script.splitlines() if line.strip().startswith("exec ")]
    # As root: drop to the user, as the same process (exec), so Fly's SIGINT reaches serve.
    assert commands == [
        'exec setpriv --reuid="$APP_USER" --regid="$APP_USER" --init-groups -- "$@"',
        'exec "$@"',
    ]
    assert "APP_USER=invoicehook" in script
    user = last.last("USER")
    assert user in (None, "root", "0") or user.startswith("invoicehook")
    subprocess.run(["sh", "-n", str(ROOT / "entrypoint.sh")], check=True)


def test_the_seller_file_is_not_in_the_image_but_named_by_it() -> None:
    env = runtime().env()
    assert env["INVOICEHOOK_CONFIG"] == f"{APP}/invoicehook.toml"
    assert env["PATH"].startswith(f"{APP}/.venv/bin:")


def test_healthcheck_asks_healthz_with_the_stdlib() -> None:
    options, command = healthcheck(runtime().last("HEALTHCHECK") or "")
    assert command[:2] == ["python", "-c"]
    assert "urllib.request" in command[2] and "/healthz" in command[2]
    cmd = exec_form(runtime().last("CMD") or "[]")
    port = cmd[cmd.index("--port") + 1]
    assert f"127.0.0.1:{port}/healthz" in command[2]
    assert runtime().last("EXPOSE") == port


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str) -> bool:
    return any(fnmatch(path, p) or fnmatch(path, p.removeprefix("**/")) for p in dockerignore())


def test_dockerignore_keeps_out_what_must_not_ship_and_nothing_copied() -> None:
    for name in (".venv", ".git", "tests", "bench", "var", "invoicehook.toml", ".env"):
        assert ignored(name), name
    for name in (".mypy_cache", ".ruff_cache", ".pytest_cache", "__pycache__", "x.pyc"):
        assert ignored(name), name
    for source in copied_sources(builder()) + copied_sources(runtime()):
        assert not ignored(source), f".dockerignore drops {source}, which the Dockerfile copies"


# --- the image's steps, run ---------------------------------------------------------------


def image_env(app: Path, extra: dict[str, str]) -> dict[str, str]:
    """The runtime stage's ENV with /app moved to ``app``; nothing of this shell's."""
    env = {"HOME": str(app), "LANG": "C.UTF-8"}
    for key, value in runtime().env().items():
        env[key] = value.replace(APP, str(app)).replace("$PATH", "/usr/local/bin:/usr/bin:/bin")
    return {**env, **extra}


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The builder's work in a folder: the context files it copies, then its `uv sync`."""
    app = tmp_path_factory.mktemp("image") / "app"
    app.mkdir()
    for source in copied_sources(builder()):
        origin = ROOT / source
        if origin.is_dir():
            shutil.copytree(origin, app / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, app / source)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))},
        **{k: v.replace(APP, str(app)) for k, v in builder().env().items()},
        # The cache is warm, so linking beats copying; bytecode is compiled at first import.
        "UV_LINK_MODE": "hardlink",
        "UV_COMPILE_BYTECODE": "0",
        "UV_PYTHON": sys.executable,
    }
    for command in uv_sync_commands(builder()):
        done = subprocess.run(
            [uv_binary(), *command[1:], "--quiet"],
            cwd=app,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr
    return app


def dev_packages() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    names = [
        re.split(r"[\[<>=~!; ]", req, maxsplit=1)[0] for req in project["dependency-groups"]["dev"]
    ]
    return sorted(set(names))


@needs_uv
def test_the_no_dev_venv_lacks_every_dev_package(image: Path) -> None:
    python = image / ".venv" / "bin" / "python"
    probe = (
        "import importlib.metadata as m, json, sys\n"
        "found = []\n"
        "for name in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        m.distribution(name)\n"
        "        found.append(name)\n"
        "    except m.PackageNotFoundError:\n"
        "        pass\n"
        "print(json.dumps(found))\n"
    )
    # sanity: the probe sees installs; pypdf is a test tool and also what factur-x (runtime)
    # reads and writes PDFs with, so the image has it for that reason.
    runtime_needs = {"stripe", "uvicorn", "starlette", "pypdf"}
    done = subprocess.run(
        [str(python), "-c", probe, json.dumps(dev_packages() + sorted(runtime_needs))],
        capture_output=True,
        text=True,
        check=True,
    )
    assert set(json.loads(done.stdout)) == runtime_needs


@pytest.fixture
def service(image: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """The image's CMD, from its WORKDIR with its ENV, on embedded defaults but for the
    data folders (a volume) and a free port; the seller's file where [[files]] puts it."""
    port = free_port()
    data = tmp_path / "data"
    env = image_env(
        image,
        {
            "DATABASE_URL": f"sqlite:///{data}/invoicehook.db",
            "STORAGE_URL": f"file://{data}/invoices",
            "EMAIL_URL": f"file://{data}/outbox",
            "ZAPIER_TOKEN": TOKEN,
            "PUBLIC_URL": f"http://127.0.0.1:{port}",
        },
    )
    config = Path(env["INVOICEHOOK_CONFIG"])
    config.unlink(missing_ok=True)
    # The file Fly writes from INVOICEHOOK_TOML, made by the image's own `invoicehook init`.
    init = [
        str(image / ".venv" / "bin" / "invoicehook"),
        "init",
        "--yes",
        "--name=Zoé Dupont",
        "--address=12 rue des Lilas",
        "--address=75011 Paris",
        "--siren=732829320",
        "--email=zoe@example.com",
    ]
    subprocess.run(init, cwd=image, env=env, check=True, capture_output=True, timeout=60)
    cmd = exec_form(runtime().last("CMD") or "[]")
    cmd[cmd.index("--port") + 1] = str(port)
    cmd[cmd.index("--host") + 1] = "127.0.0.1"  # a shared machine: not every interface
    executable = shutil.which(cmd[0], path=env["PATH"])
    assert executable is not None and executable.startswith(str(image)), executable
    proc = subprocess.Popen([executable, *cmd[1:]], cwd=image, env=env)
    try:
        wait_until(lambda: healthz(port) == 200 or proc.poll() is not None, 60, "healthz")
        assert proc.poll() is None, "the service stopped at start"
        yield proc, port, data
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # fly.toml's kill_signal
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def healthz(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return int(r.status)
    except OSError:
        return None


@needs_uv
def test_the_image_serves_a_sale_on_its_cmd(
    image: Path, service: tuple[subprocess.Popen[bytes], int, Path]
) -> None:
    """/healthz answers 200, the HEALTHCHECK's own command passes, and one Zapier sale is
    numbered, stored and mailed by the worker: nothing it runs needs a dev package."""
    proc, port, data = service
    _, check = healthcheck(runtime().last("HEALTHCHECK") or "")
    check = [c.replace("127.0.0.1:8080", f"127.0.0.1:{port}") for c in check]
    env = image_env(image, {})
    executable = shutil.which(check[0], path=env["PATH"])
    assert executable is not None and executable.startswith(str(image))
    subprocess.run([executable, *check[1:]], env=env, check=True, timeout=10)

    order = {
        "order_id": "image-1",
        "email": "lea@example.org",
        "name": "Léa Martin",
        "product": "Cours d'aquarelle",
        "amount": "49.00",
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/webhooks/zapier",
        data=json.dumps(order).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 202)
    outbox = data / "outbox"
    wait_until(lambda: outbox.exists() and any(outbox.rglob("*.eml")), 90, "the invoice email")
    assert list((data / "invoices").rglob("*.pdf"))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        state = json.loads(response.read())
    assert (state["database"], state["worker"]) == ("ok", "running")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0


@needs_uv
def test_without_the_sellers_file_the_image_stops_with_one_line(
    image: Path, tmp_path: Path
) -> None:
    """No INVOICEHOOK_TOML secret yet: the service refuses to start, saying what is missing,
    rather than invoicing under someone else's name."""
    env = image_env(image, {"DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite"})
    env["INVOICEHOOK_CONFIG"] = str(tmp_path / "missing.toml")
    cmd = exec_form(runtime().last("CMD") or "[]")
    executable = shutil.which(cmd[0], path=env["PATH"])
    assert executable is not None
    done = subprocess.run(
        [executable, *cmd[1:]], cwd=image, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert f"INVOICEHOOK_CONFIG: no file at {tmp_path}/missing.toml" in done.stderr
    assert "Traceback" not in done.stderr
