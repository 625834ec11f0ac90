"""Security headers on every kind of response, trusted hosts (DNS rebinding), and request header limits against
a real uvicorn configured as ``wardwatch serve`` configures it."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.api.hardening import CSP, DOCS_CSP, HEADERS
from server.main import create_app
from server.security.secret_box import new_key
from server.settings import Settings
from tests.accounts import act_as
from tests.conftest import running_server


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    return create_app(Settings(data_dir=tmp_path / "data", broker_url=None, device="cpu"))


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def _assert_hardened(response: httpx.Response, policy: str = CSP) -> None:
    assert response.headers["content-security-policy"] == policy, response.request.url
    for name, value in HEADERS.items():
        assert response.headers[name] == value, (response.request.url, name)


@pytest.mark.parametrize("path", ["/", "/index.html", "/models.html", "/app.js", "/styles.css", "/missing.js",
                                  "/api/v1/health", "/api/v1/events", "/api/v1/events/1", "/api/v1/nope",
                                  "/openapi.json"])
def test_every_response_carries_the_security_headers(client: TestClient, path: str) -> None:
    _assert_hardened(client.get(path))


def test_authenticated_api_answers_and_errors_carry_them(client: TestClient) -> None:
    act_as(client, "admin")
    for response in (client.get("/api/v1/events"), client.get("/api/v1/events/999"),
                     client.get("/api/v1/events", params={"limit": "x"}),
                     client.post("/api/v1/recordings", json={"path": "../etc/passwd"})):
        assert response.status_code < 500
        _assert_hardened(response)


def test_an_unhandled_error_500_carries_them(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path / "data", broker_url=None, device="cpu"))

    def boom() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/boom", boom)
    app.router.routes.insert(0, app.router.routes.pop())  # before the web UI mounted at /

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500
    _assert_hardened(response)


def test_the_development_api_explorer_has_its_own_relaxed_policy(client: TestClient) -> None:
    """Swagger UI / ReDoc come from a CDN with an inline start-up script; development only."""
    for path in ("/docs", "/redoc"):
        response = client.get(path)
        assert response.status_code == 200
        _assert_hardened(response, DOCS_CSP)
    assert "'unsafe-inline'" not in CSP


def test_production_has_no_explorer_and_the_strict_policy_everywhere(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path / "data", broker_url=None, device="cpu", environment="production",
                              secret_keys=[new_key()]))
    with TestClient(app) as client:
        response = client.get("/docs")
    assert response.status_code == 404
    _assert_hardened(response)


def test_pages_have_no_inline_script_style_or_handler() -> None:
    """What the strict policy would block: the browser test would see it too, this names the file."""
    import re

    web = Path(__file__).resolve().parents[2] / "web"
    for page in web.glob("*.html"):
        text = page.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), page
        assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=|javascript:", text, re.IGNORECASE), page
    for script in web.glob("*.js"):
        text = script.read_text()
        assert not re.search(r"\.innerHTML\s*=|insertAdjacentHTML|\beval\(|new Function\(|setAttribute\(\s*[\"']style",
                             text), script


# --- trusted hosts -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.evil.example", "wardwatch.internal"])
def test_another_host_header_gets_400(client: TestClient, host: str) -> None:
    """DNS rebinding: a page on evil.example whose name now resolves to the server still sends its own Host."""
    for path in ("/", "/api/v1/health", "/api/v1/events"):
        response = client.get(path, headers={"Host": host})
        assert response.status_code == 400, (path, host)
        _assert_hardened(response)


def test_configured_hosts_and_wildcards_are_served(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", broker_url=None, device="cpu",
                        trusted_hosts="wardwatch.hospital.example, *.ward.example")  # type: ignore[arg-type]
    assert settings.trusted_hosts == ["wardwatch.hospital.example", "*.ward.example"]
    with TestClient(create_app(settings), base_url="http://wardwatch.hospital.example") as client:
        assert client.get("/api/v1/health").status_code == 200
        assert client.get("/api/v1/health", headers={"Host": "icu.ward.example:8443"}).status_code == 200
        assert client.get("/api/v1/health", headers={"Host": "testserver"}).status_code == 400
        assert client.get("/api/v1/health", headers={"Host": "ward.example.evil"}).status_code == 400


def test_trusted_host_settings_are_checked() -> None:
    assert Settings(trusted_hosts=["::1", "LocalHost"]).trusted_hosts == ["[::1]", "localhost"]
    assert Settings(trusted_hosts='["a.example"]').trusted_hosts == ["a.example"]  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="wildcard"):
        Settings(trusted_hosts=["ward*.example"])


def test_default_hosts_include_the_loopback_names(app: FastAPI) -> None:
    with running_server(app) as base:
        port = base.rsplit(":", 1)[1]
        for host in ("127.0.0.1", "localhost", f"localhost:{port}"):
            assert httpx.get(f"{base}/api/v1/health", headers={"Host": host}).status_code == 200, host
        assert httpx.get(f"{base}/api/v1/health", headers={"Host": f"[::1]:{port}"}).status_code == 200
        assert httpx.get(f"{base}/api/v1/health", headers={"Host": "rebound.example"}).status_code == 400


# --- header limits -----------------------------------------------------------------------------------------------


def _raw_request(base: str, head: bytes, timeout: float = 10) -> bytes:
    """Send ``head`` on a raw socket; what the server answered before closing (or b"" if it just closed)."""
    host, port = base.removeprefix("http://").split(":")
    received = b""
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        try:
            sock.sendall(head)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused mid-send: also an answer
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except ConnectionResetError:
            pass
    return received


def _status(answer: bytes) -> int | None:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None


def test_a_one_mib_header_is_refused_and_the_server_keeps_answering(app: FastAPI) -> None:
    with running_server(app) as base:
        started = time.monotonic()
        answer = _raw_request(base, b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
                              + b"a" * (1024 * 1024) + b"\r\n\r\n")
        assert time.monotonic() - started < 10  # refused, not hung
        status = _status(answer)
        assert status is None or 400 <= status < 500, answer[:200]
        assert httpx.get(f"{base}/api/v1/health", timeout=5).status_code == 200


def test_thousands_of_headers_are_refused_and_the_server_keeps_answering(app: FastAPI) -> None:
    with running_server(app) as base:
        many = b"".join(b"X-H%d: v\r\n" % i for i in range(5000))
        status = _status(_raw_request(base, b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + many + b"\r\n"))
        assert status is None or 400 <= status < 500
        # Fewer but still too many: under the byte limit, over the count limit -> 431 from the app.
        some = b"".join(b"X-%d: v\r\n" % i for i in range(150))
        answer = _raw_request(base, b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                              + some + b"\r\n")
        assert _status(answer) == 431, answer[:200]
        assert b"content-security-policy" in answer.lower()
        ordinary = httpx.get(f"{base}/api/v1/health", headers={f"X-{i}": "v" for i in range(20)}, timeout=5)
        assert ordinary.status_code == 200
