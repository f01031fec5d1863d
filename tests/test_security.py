"""Security: what test_webhook, test_auth, test_admin_page and test_export_routes leave out.

Stripe signatures that are almost right, every secret compared in constant time (read from
the source), signed PDF links that open one invoice and nothing else, export links that end,
no secret or buyer's data in the logs, /healthz, /metrics or an error, and bounded bodies and
headers on the real server.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import json
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from app import create_app
from invoicing import records
from invoicing.runtime import Runtime, build_runtime
from invoicing.settings import load_settings
from invoicing.store import events, jobs, sales
from tests.conftest import (
    ROOT,
    SECRET,
    Service,
    all_jobs_done,
    checkout_event,
    sell,
    settle,
    sign,
    wait_until,
    write_config,
)

ADMIN = "adm1n-s3cret-for-security-tests"
ZAPIER = "zap-t0ken-for-security-tests"


def environment(tmp_path: Path) -> dict[str, str]:
    return {
        "INVOICEHOOK_CONFIG": str(write_config(tmp_path)),
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
        "STORAGE_URL": f"file://{tmp_path}/invoices",
        "EMAIL_URL": f"file://{tmp_path}/outbox",
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "ZAPIER_TOKEN": ZAPIER,
        "ADMIN_TOKEN": ADMIN,
        "PUBLIC_URL": "https://invoices.example.com",
    }


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    return build_runtime(load_settings(environment(tmp_path)))


@pytest.fixture
def client(rt: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(rt.settings, runtime=rt, start_worker=False)) as test_client:
        yield test_client


def counts(rt: Runtime) -> tuple[int, int, int]:
    with rt.engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in (events, sales, jobs)
        )


# -- Stripe signatures --------------------------------------------------------------------------


def v1(body: bytes, stamp: int, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()


BODY = json.dumps(checkout_event(1)).encode()


def refused_headers() -> dict[str, str | None]:
    now = int(time.time())
    good = v1(BODY, now)
    other = json.dumps(checkout_event(2)).encode()
    return {
        "replayed an hour later": f"t={now - 3600},v1={v1(BODY, now - 3600)}",
        "just past the tolerance": f"t={now - 301},v1={v1(BODY, now - 301)}",
        "from the future": f"t={now + 3600},v1={v1(BODY, now + 3600)}",
        "forged": f"t={now},v1={'0' * 64}",
        "truncated": f"t={now},v1={good[:32]}",
        "one character more": f"t={now},v1={good}0",
        "in capitals": f"t={now},v1={good.upper()}",
        "over another body": f"t={now},v1={v1(other, now)}",
        "over another timestamp": f"t={now - 1},v1={good}",
        "with another secret": f"t={now},v1={v1(BODY, now, 'whsec_other')}",
        "v0 only (Stripe's test scheme)": f"t={now},v0={good}",
        "empty": "",
        "missing": None,
    }


def test_almost_right_signatures_are_refused_and_nothing_is_recorded(
    client: TestClient, rt: Runtime
) -> None:
    for what, header in refused_headers().items():
        headers = {} if header is None else {"Stripe-Signature": header}
        answer = client.post("/webhooks/stripe", content=BODY, headers=headers)
        assert answer.status_code == 400, what
        message = answer.json()["error"]
        assert any(
            word in message for word in ("does not match", "old", "future", "missing", "t=…")
        ), (what, message)
        assert SECRET not in answer.text
    assert counts(rt) == (0, 0, 0)


def test_any_matching_v1_is_enough_as_in_stripes_scheme(client: TestClient, rt: Runtime) -> None:
    """While a secret is rolled Stripe signs with both: one good v1 among others opens."""
    now = int(time.time())
    header = f"t={now},v1={'0' * 64},v1={v1(BODY, now, 'whsec_old')},v1={v1(BODY, now)}"
    answer = client.post("/webhooks/stripe", content=BODY, headers={"Stripe-Signature": header})
    assert (answer.status_code, answer.json()["status"]) == (200, "accepted")
    # The stripe SDK's own header (t, v1, v0) is accepted too.
    other = json.dumps(checkout_event(2)).encode()
    sdk = client.post("/webhooks/stripe", content=other, headers={"Stripe-Signature": sign(other)})
    assert sdk.status_code == 200
    assert counts(rt) == (2, 2, 2)


# -- constant-time comparisons, read from the source ------------------------------------------

# (module, function) where a secret or a signature is compared, and what compares it.
COMPARERS = [
    ("integrations/stripe_events.py", "verify", "compare_digest"),
    ("integrations/zapier.py", "ZapierSource.receive", "compare_digest"),
    ("invoicing/auth.py", "_same", "compare_digest"),
    ("invoicing/auth.py", "check_admin", "_same"),
    ("invoicing/links.py", "LinkSigner.verify", "compare_digest"),
    ("invoicing/links.py", "LinkSigner.verify_export", "verify"),
    ("invoicing/admin_page.py", "check_csrf", "compare_digest"),
    ("invoicing/admin_page.py", "read_flash", "compare_digest"),
]
# Names that hold a secret, a presented credential or a MAC in those modules.
SECRET_NAMES = {
    "secret",
    "token",
    "admin_token",
    "given",
    "expected",
    "sig",
    "signature",
    "signatures",
    "mac",
    "password",
    "credentials",
    "_key",
}


def function(path: str, qualname: str) -> ast.FunctionDef:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    scope: ast.AST = tree
    for part in qualname.split("."):
        found = [
            node
            for node in ast.iter_child_nodes(scope)
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == part
        ]
        assert found, f"{path}: no {qualname} (renamed? update this test)"
        scope = found[0]
    assert isinstance(scope, ast.FunctionDef)
    return scope


def called(node: ast.AST) -> set[str]:
    names = set()
    for call in ast.walk(node):
        if isinstance(call, ast.Call):
            f = call.func
            names.add(f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", ""))
    return names


def secret_names_in(node: ast.AST) -> set[str]:
    found = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and n.id in SECRET_NAMES:
            found.add(n.id)
        elif isinstance(n, ast.Attribute) and n.attr in SECRET_NAMES:
            found.add(n.attr)
    return found


@pytest.mark.parametrize(("path", "qualname", "comparer"), COMPARERS)
def test_secrets_are_compared_in_constant_time(path: str, qualname: str, comparer: str) -> None:
    fn = function(path, qualname)
    assert comparer in called(fn), f"{path}: {qualname} no longer calls {comparer}"
    for node in ast.walk(fn):
        if isinstance(node, ast.Compare) and any(
            isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn) for op in node.ops
        ):
            leaked = secret_names_in(node)
            assert not leaked, (
                f"{path}:{node.lineno} compares {', '.join(sorted(leaked))} with ==/in: "
                "use hmac.compare_digest"
            )


def test_no_module_compares_a_secret_with_equals() -> None:
    """Beyond the functions above: nowhere in the service is a secret compared with ==."""
    offenders = []
    for path in sorted([*ROOT.glob("invoicing/*.py"), *ROOT.glob("integrations/*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            if not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                continue
            operands = [node.left, *node.comparators]
            # A comparison with a literal (a header's "t" key, a scheme) compares no secret.
            if any(isinstance(o, ast.Constant) for o in operands):
                continue
            leaked = secret_names_in(node) & {"secret", "token", "given", "mac", "password"}
            if leaked:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {sorted(leaked)}")
    assert offenders == []


# -- signed PDF links ---------------------------------------------------------------------------


@pytest.fixture
def two_invoices(rt: Runtime) -> list[str]:
    sell(rt, checkout_event(1))
    sell(rt, checkout_event(2, email="noe@example.org"))
    settle(rt)
    with rt.engine.connect() as conn:
        numbers = [doc.number for doc in records.documents(conn)]
    assert len(numbers) == 2
    return sorted(numbers)


def pdf(client: TestClient, number: str, sig: str) -> httpx.Response:
    return client.get(f"/invoices/{number}.pdf", params={"sig": sig})


def test_a_link_opens_its_invoice_and_no_other(
    client: TestClient, rt: Runtime, two_invoices: list[str]
) -> None:
    first, second = two_invoices
    own = rt.links.signature(first)
    opened = pdf(client, first, own)
    assert (opened.status_code, opened.content[:5]) == (200, b"%PDF-")
    assert pdf(client, second, own).status_code == 403
    for sig in (
        own[:-1],
        own[:16],
        own + "0",
        own[:-1] + ("1" if own.endswith("0") else "0"),
        own.upper(),
        "",
        rt.links.signature(first.lower()),
        hmac.new(b"another key", first.encode(), hashlib.sha256).hexdigest()[:32],
    ):
        refused = pdf(client, first, sig)
        assert refused.status_code == 403, sig
        assert refused.headers["content-type"] == "application/json"
    # The number in another case, even signed as such, is no invoice.
    assert pdf(client, first.lower(), rt.links.signature(first.lower())).status_code == 404


@pytest.mark.parametrize(
    "name",
    [
        "../db.sqlite",
        "../../../../etc/passwd",
        "..%2Fdb.sqlite",
        "%2e%2e%2fdb.sqlite",
        "F2026-000001%00",
        "F2026-000001\x00.txt",
        "invoices/../db.sqlite",
        "/etc/passwd",
    ],
)
def test_path_tricks_open_no_file_even_when_signed(
    client: TestClient, rt: Runtime, two_invoices: list[str], tmp_path: Path, name: str
) -> None:
    """The number is looked up in the database, never joined to a path: a name with path
    tricks, even signed with the service's own key, is a 403 or a 404 and no file."""
    (tmp_path / "invoices" / "secret.pdf").write_bytes(b"%PDF- not an invoice")
    for sig in ("0" * 32, rt.links.signature(name)):
        quoted = name.replace("\x00", "%00")
        answer = client.get(f"/invoices/{quoted}.pdf?sig={sig}")
        assert answer.status_code in (403, 404), (name, sig)
        assert not answer.content.startswith(b"%PDF"), name
        assert b"root:" not in answer.content


def test_an_export_link_ends_when_it_says(client: TestClient, rt: Runtime) -> None:
    """Signed by the service itself, for this very file: the link opens until ``expires``,
    then asks for the admin token like any other request."""
    now = int(time.time())
    live = rt.links.export_url("2026-11.csv", now + 60).removeprefix(rt.links.public_url)
    assert client.get(live).status_code == 200
    for stamp in (now - 1, now - 86400, 0):
        ended = rt.links.export_url("2026-11.csv", stamp).removeprefix(rt.links.public_url)
        answer = client.get(ended)
        assert answer.status_code == 401, stamp
        assert answer.headers["www-authenticate"].startswith("Basic realm=")
    # An invoice's signature is no export's, and an export's no invoice's.
    sig = rt.links.signature("2026-11.csv")
    assert client.get(f"/exports/2026-11.csv?expires={now + 60}&sig={sig}").status_code == 401
    for bad in ("", "-1", "1e12", " 9999999999", "9999999999.0"):
        answer = client.get(f"/exports/2026-11.csv?expires={bad}&sig={sig}")
        assert answer.status_code == 401, bad


# -- nothing secret in the logs, the errors, /healthz or /metrics -------------------------------

CARD = "4242424242424242"
FINGERPRINT = "fp_Hx9QsSeCrEtCaRd"
BUYER = "camille.secret-buyer@example.net"


def test_no_secret_or_payment_detail_reaches_the_log_or_a_page(
    tmp_path: Path, service_env: dict[str, str], services: list[Service]
) -> None:
    service = Service({**service_env, "ZAPIER_TOKEN": ZAPIER, "ADMIN_TOKEN": ADMIN}, tmp_path)
    service.env["LOG_LEVEL"] = "DEBUG"
    services.append(service.start())
    event = checkout_event(7, email=BUYER, name="Camille Secretbuyer")
    event["data"]["object"]["payment_method_details"] = {
        "card": {"number": CARD, "last4": CARD[-4:], "fingerprint": FINGERPRINT}
    }
    body = json.dumps(event).encode()
    order = {
        "order_id": "z-1",
        "email": BUYER,
        "product": "Atelier",
        "amount": "49.00",
        "card_number": CARD,
    }
    pages: list[httpx.Response] = []
    with service.client() as http:
        signed = {"Stripe-Signature": sign(body), "Content-Type": "application/json"}
        pages.append(http.post("/webhooks/stripe", content=body, headers=signed))
        assert pages[-1].status_code == 200, pages[-1].text
        pages += [
            # A leaked secret given back by mistake, in the query and the headers.
            http.post(f"/webhooks/stripe?secret={SECRET}&token={ADMIN}", content=body),
            http.post(
                "/webhooks/stripe",
                content=body.replace(b"19900", b"1"),
                headers={"Stripe-Signature": sign(body), "X-Debug": SECRET},
            ),
            http.post(f"/webhooks/zapier?token={ZAPIER}", json=order),
            http.post(f"/webhooks/zapier?token={ZAPIER}x", json=order),
            http.post(
                "/webhooks/zapier",
                json={**order, "order_id": "z-2"},
                headers={"Authorization": f"Bearer {ZAPIER}"},
            ),
            http.post(
                "/webhooks/zapier",
                json={**order, "amount": "oops"},
                headers={"Authorization": f"Bearer {ZAPIER}"},
            ),
            http.get(f"/admin?token={ADMIN}"),
            http.get("/admin", headers={"Authorization": f"Bearer {ADMIN}x"}),
            http.get(f"/exports/2026-11.zip?sig={ADMIN}&expires=1"),
            http.get(f"/invoices/F2026-999999.pdf?sig={ADMIN}"),
            http.post(
                "/admin/retry",
                data={"sale": "1", "csrf": ADMIN},
                headers={"Authorization": f"Bearer {ADMIN}"},
            ),
        ]
        url = service_env["DATABASE_URL"]
        wait_until(lambda: all_jobs_done(url), what="the sales to be invoiced")
        pages += [http.get("/healthz"), http.get("/metrics")]
        admin_page = http.get("/admin", headers={"Authorization": f"Bearer {ADMIN}"})
    assert pages[3].status_code == 200 and pages[4].status_code == 401
    assert admin_page.status_code == 200 and BUYER in admin_page.text  # where it belongs
    service.stop()
    log = service.log()
    assert '"level": "debug"' in log or "[debug" in log, "the log is not at DEBUG"
    assert "/webhooks/zapier" in log and "/admin" in log
    for secret in (SECRET, ZAPIER, ADMIN, BUYER, CARD, FINGERPRINT, "Secretbuyer"):
        assert secret not in log, f"{secret!r} is in the log"
    for page in pages:
        for secret in (SECRET, ZAPIER, ADMIN, CARD, FINGERPRINT):
            assert secret not in page.text, (page.request.url, secret)
        if page.request.url.path in ("/healthz", "/metrics"):
            assert BUYER not in page.text and "Secretbuyer" not in page.text


# -- bounded bodies and headers on the real server ---------------------------------------------


def raw(port: int, request: bytes, more: Iterable[bytes] = ()) -> bytes:
    """Send ``request`` then the chunks of ``more`` (stopping when the server hangs up);
    what the server answered before closing."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        try:
            s.sendall(request)
            for chunk in more:
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server said no before the end, as it should
        answer = b""
        try:
            while data := s.recv(65536):
                answer += data
                if b"\r\n\r\n" in answer and b"Connection: close" not in answer:
                    head, _, rest = answer.partition(b"\r\n\r\n")
                    length = [
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ]
                    if length and len(rest) >= length[0]:
                        break
        except (ConnectionResetError, TimeoutError):
            pass
    return answer


def chunked(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        piece = b" " * min(size, total - sent)
        sent += len(piece)
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    yield b"0\r\n\r\n"


def trickle(data: bytes, size: int = 4096) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        time.sleep(0.001)  # in several reads, as a slow client sends
        yield data[start : start + size]


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ")[1])


def test_bodies_and_headers_are_bounded(
    tmp_path: Path, service_env: dict[str, str], services: list[Service]
) -> None:
    service = Service({**service_env, "ZAPIER_TOKEN": ZAPIER, "ADMIN_TOKEN": ADMIN}, tmp_path)
    services.append(service.start())
    port = service.port

    def post(path: str, *headers: str) -> bytes:
        head = "\r\n".join(
            [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "Transfer-Encoding: chunked"]
        )
        return (head + "\r\n\r\n").encode()

    # A chunked body with no Content-Length, bigger than 1 MiB: 413, read no further.
    for path, headers in (
        ("/webhooks/stripe", ("Stripe-Signature: t=1,v1=00",)),
        ("/webhooks/zapier", (f"Authorization: Bearer {ZAPIER}",)),
    ):
        answer = raw(port, post(path, *headers), chunked(3 * 1024 * 1024))
        assert status_of(answer) == 413, answer[:300]
    # The admin's forms: 16 KiB.
    answer = raw(port, post("/admin/retry", f"Authorization: Bearer {ADMIN}"), chunked(64 * 1024))
    assert status_of(answer) == 413, answer[:300]
    # A Content-Length that says too much is refused before the body is read.
    head = b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nStripe-Signature: t=1,v1=0\r\n"
    answer = raw(port, head + b"Content-Length: 99999999999\r\n\r\n")
    assert status_of(answer) == 413

    # A 100 KB header, one or many, whole or trickled: 431 (or the connection cut while
    # the client still sends), and the server answers the next request.
    big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    lines = b"".join(f"X-{i}: {'c' * 90}\r\n".encode() for i in range(1100))
    many = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n"
    for request in (big, many):
        for answer in (raw(port, request), raw(port, b"", trickle(request))):
            assert answer == b"" or status_of(answer) == 431, answer[:300]
            assert service.healthy(), "the server no longer answers after a huge header"
    # Under the bound (64 KiB), a big header is still served.
    fine = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 60_000 + b"\r\n\r\n"
    assert status_of(raw(port, fine)) == 200
    assert status_of(raw(port, b"", trickle(fine))) == 200
    assert service.proc is not None and service.proc.poll() is None
    assert httpx.get(f"{service.url}/healthz", timeout=5).status_code == 200


def test_a_chunked_body_over_the_limit_is_413_in_process(client: TestClient, rt: Runtime) -> None:
    """The same without a server in front: the app counts what it reads, whatever the
    headers say (httpx sends an iterator chunked, without Content-Length)."""

    def body() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * (64 * 1024)

    answer = client.post(
        "/webhooks/stripe", content=body(), headers={"Stripe-Signature": "t=1,v1=00"}
    )
    assert answer.status_code == 413
    assert counts(rt) == (0, 0, 0)
