"""Fetching the trust list over real HTTPS from a local server using the test PKI (TRUST-2, TRUST-8).

The command runs as a separate process (``python -m mssante.trustlist``), as the daily timer runs it.
"""

from __future__ import annotations

import json
import os
import select
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tests.support.common import random_loopback
from tests.unit.trustlist.helpers import SIGNER_CN, issue_server_cert, pki, signed_sample

SERVER_TIMEOUT = 30


@dataclass
class Site:
    """What the test server serves and what it saw."""

    body: bytes
    etag: str = '"v1"'
    status: int = 200
    requests: list[dict[str, str]] = field(default_factory=list)
    peer_certs: list[Any] = field(default_factory=list)


def make_handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            site.requests.append(dict(self.headers.items()))
            site.peer_certs.append(self.connection.getpeercert())  # type: ignore[attr-defined]
            if site.status != 200:
                self.send_error(site.status)
                return
            if self.headers.get("If-None-Match") == site.etag:
                self.send_response(304)
                self.send_header("ETag", site.etag)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(site.body)))
            self.send_header("ETag", site.etag)
            self.send_header("Last-Modified", "Fri, 20 Nov 2026 06:00:00 GMT")
            self.end_headers()
            self.wfile.write(site.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@dataclass
class Server:
    address: str
    port: int
    site: Site

    @property
    def url(self) -> str:
        return f"https://{self.address}:{self.port}/listeblanchemssante.xml"


def start_server(
    directory: Path, authority: str, site: Site, require_client_cert: bool = False
) -> Iterator[Server]:
    address = random_loopback()
    cert, key = issue_server_cert(directory, authority, address)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki().chain)
    httpd = ThreadingHTTPServer((address, 0), make_handler(site))
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    httpd.timeout = SERVER_TIMEOUT
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Server(address, httpd.server_address[1], site)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=SERVER_TIMEOUT)


@pytest.fixture(scope="module")
def signed() -> bytes:
    return signed_sample()


@pytest.fixture
def igc_server(tmp_path: Path, signed: bytes) -> Iterator[Server]:
    yield from start_server(tmp_path, "intermediate", Site(signed))


@pytest.fixture
def foreign_server(tmp_path: Path, signed: bytes) -> Iterator[Server]:
    yield from start_server(tmp_path, "foreign_ca", Site(signed))


def cli(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "mssante.trustlist", *args]
    if config is not None:
        argv += ["--config", str(config)]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, env=dict(os.environ), check=False
    )


def fetch_args(source: str, out: Path, *extra: str) -> list[str]:
    return [
        "fetch",
        "--source",
        source,
        "--out",
        str(out),
        "--ca",
        str(pki().chain),
        "--signer",
        SIGNER_CN,
        *extra,
    ]


def quick_config(directory: Path, **values: Any) -> Path:
    """A mssante.yml whose trustlist section sets short timeouts and no retry."""
    section = {"timeout_seconds": 5, "retries": 0, **values}
    path = directory / "mssante.yml"
    path.write_text(json.dumps({"schema": 1, "trustlist": section}), encoding="utf-8")  # JSON is YAML
    return path


def test_trust2_https_fetch_verified_against_igc_chain(tmp_path: Path, igc_server: Server) -> None:
    out = tmp_path / "out"
    result = cli(*fetch_args(igc_server.url, out, "--json"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outcome"] == "switched"
    assert (out / "current" / "index.json").exists()
    status = json.loads((out / "status.json").read_text(encoding="utf-8"))
    assert status["outcome"] == "switched" and status["domains"] == 6


def test_trust2_conditional_get_reports_unchanged(tmp_path: Path, igc_server: Server) -> None:
    out = tmp_path / "out"
    assert cli(*fetch_args(igc_server.url, out)).returncode == 0
    again = cli(*fetch_args(igc_server.url, out))
    assert again.returncode == 4, again.stderr
    assert igc_server.site.requests[-1].get("If-None-Match") == '"v1"'
    assert igc_server.site.requests[-1].get("If-Modified-Since") == "Fri, 20 Nov 2026 06:00:00 GMT"
    # Control: a changed entity tag makes the server send the list again (same content: unchanged, 4).
    igc_server.site.etag = '"v2"'
    third = cli(*fetch_args(igc_server.url, out))
    assert third.returncode == 4 and "same content" in third.stdout
    # --force never sends validators.
    cli(*fetch_args(igc_server.url, out, "--force"))
    assert "If-None-Match" not in igc_server.site.requests[-1]


def test_trust2_server_certificate_from_foreign_ca_refused(
    tmp_path: Path, foreign_server: Server, igc_server: Server
) -> None:
    out = tmp_path / "out"
    assert cli(*fetch_args(igc_server.url, out)).returncode == 0  # a last good list
    before = os.readlink(out / "current")
    result = cli(*fetch_args(foreign_server.url, out), config=quick_config(tmp_path))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr or "certificate verify failed" in result.stderr
    assert os.readlink(out / "current") == before
    assert json.loads((out / "status.json").read_text(encoding="utf-8"))["outcome"] == "fetch-failed"
    assert foreign_server.site.requests == []  # no request was sent over the unverified channel


def test_trust2_only_the_configured_bundle_is_trusted(tmp_path: Path, igc_server: Server) -> None:
    # The same server as the accepted fetch, with a bundle that does not hold its issuer.
    out = tmp_path / "out"
    config = quick_config(tmp_path)
    argv = [
        "fetch", "--source", igc_server.url, "--out", str(out),
        "--ca", str(pki().foreign_ca.cert), "--allow-unsigned",
    ]  # fmt: skip
    result = cli(*argv, config=config)
    assert result.returncode == 3
    assert not (out / "current").exists()


def test_trust2_https_source_needs_a_ca(tmp_path: Path, igc_server: Server) -> None:
    result = cli("fetch", "--source", igc_server.url, "--out", str(tmp_path / "out"), "--allow-unsigned")
    assert result.returncode == 2
    assert "CA bundle" in result.stderr


def test_trust2_client_certificate_presented(tmp_path: Path, signed: bytes) -> None:
    hospital = pki().hospital
    for server in start_server(tmp_path, "intermediate", Site(signed), require_client_cert=True):
        out = tmp_path / "out"
        without = cli(*fetch_args(server.url, out), config=quick_config(tmp_path))
        assert without.returncode == 3
        config = quick_config(tmp_path, client_cert=str(hospital.cert), client_key=str(hospital.key))
        with_cert = cli(*fetch_args(server.url, out), config=config)
        assert with_cert.returncode == 0, with_cert.stderr
        subject = dict(x[0] for x in server.site.peer_certs[-1]["subject"])
        assert subject["commonName"] == hospital.cn


def test_trust2_http_error_is_a_fetch_failure(tmp_path: Path, igc_server: Server) -> None:
    igc_server.site.status = 404
    result = cli(*fetch_args(igc_server.url, tmp_path / "out"), config=quick_config(tmp_path, retries=3))
    assert result.returncode == 3
    assert len(igc_server.site.requests) == 1  # a 4xx is not retried


def test_trust2_server_errors_retried_boundedly(tmp_path: Path, igc_server: Server) -> None:
    igc_server.site.status = 503
    result = cli(*fetch_args(igc_server.url, tmp_path / "out"), config=quick_config(tmp_path, retries=2))
    assert result.returncode == 3
    assert len(igc_server.site.requests) == 3


def test_trust2_local_path_and_file_url(tmp_path: Path, signed: bytes) -> None:
    source = tmp_path / "liste blanche.xml"
    source.write_bytes(signed)
    first = cli(*fetch_args(str(source), tmp_path / "a"))
    assert first.returncode == 0, first.stderr
    second = cli(*fetch_args(source.as_uri(), tmp_path / "b"))
    assert second.returncode == 0, second.stderr
    missing = cli(*fetch_args(str(tmp_path / "absent.xml"), tmp_path / "c"))
    assert missing.returncode == 3


def test_trust2_plain_http_refused(tmp_path: Path) -> None:
    result = cli(*fetch_args("http://127.0.0.1:9/liste.xml", tmp_path / "out"))
    assert result.returncode == 2
    assert "https" in result.stderr


class ConnectProxy:
    """A minimal HTTP CONNECT proxy on loopback that records the tunnels it opened."""

    def __init__(self) -> None:
        self.address = random_loopback()
        self.listener = socket.create_server((self.address, 0))
        self.port = self.listener.getsockname()[1]
        self.tunnels: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        with client:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = client.recv(4096)
                if not chunk:
                    return
                request += chunk
            target = request.split(b" ")[1].decode()
            self.tunnels.append(target)
            host, port = target.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=SERVER_TIMEOUT) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                sockets = [client, upstream]
                while True:
                    ready, _, _ = select.select(sockets, [], [], SERVER_TIMEOUT)
                    if not ready:
                        return
                    for sock in ready:
                        data = sock.recv(65536)
                        if not data:
                            return
                        (upstream if sock is client else client).sendall(data)

    def close(self) -> None:
        self.listener.close()


def test_trust2_fetch_through_proxy(tmp_path: Path, igc_server: Server) -> None:
    proxy = ConnectProxy()
    try:
        config = quick_config(tmp_path, proxy=f"http://{proxy.address}:{proxy.port}")
        result = cli(*fetch_args(igc_server.url, tmp_path / "out"), config=config)
        assert result.returncode == 0, result.stderr
        assert proxy.tunnels == [f"{igc_server.address}:{igc_server.port}"]
    finally:
        proxy.close()
