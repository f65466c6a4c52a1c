"""Getting the published list (TRUST-2): HTTPS checked against the configured CA only, or a file.

The TLS context trusts only the configured bundle (PEM or PKCS#7): never the system store, never
verification off, TLS >= 1.2, host name checked. Redirects must stay on https. Optional client
certificate and proxy; conditional GET (ETag / Last-Modified, kept in ``OUT/.fetch-cache.json``
after a successful compile); per-attempt timeout; bounded retries with a capped back-off.
"""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from mssante.trustlist import certs
from mssante.trustlist.settings import Settings

CACHE_FILE = ".fetch-cache.json"
USER_AGENT = "mssante-trustlist/1"
BACKOFF_CAP = 8.0


class FetchError(Exception):
    """The list could not be obtained (network, TLS, HTTP status, file)."""


@dataclass(frozen=True)
class Fetched:
    """A fetched body, or ``data=None`` when the server answered 304 Not Modified."""

    data: bytes | None
    etag: str | None = None
    last_modified: str | None = None


def tls_context(settings: Settings) -> ssl.SSLContext:
    """A client context trusting the configured CA bundle only."""
    if settings.ca_file is None:
        raise FetchError("an https source needs a CA bundle (--ca)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_verify_locations(cadata=certs.bundle_pem(certs.load_bundle(settings.ca_file)))
        if settings.client_cert is not None:
            key = str(settings.client_key) if settings.client_key else None
            context.load_cert_chain(str(settings.client_cert), key)
    except (OSError, ssl.SSLError, certs.CertificateError) as exc:
        raise FetchError(f"cannot set up TLS: {exc}") from exc
    return context


class _HttpsOnlyRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(  # noqa: PLR0917 - the base class's signature
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> Any:
        if urlsplit(newurl).scheme != "https":
            raise FetchError(f"refusing a redirect to a non-https location: {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener(settings: Settings) -> urllib.request.OpenerDirector:
    proxies = {"https": settings.proxy, "http": settings.proxy} if settings.proxy else {}
    return urllib.request.build_opener(
        urllib.request.ProxyHandler(proxies),
        urllib.request.HTTPSHandler(context=tls_context(settings)),
        _HttpsOnlyRedirect(),
    )


def read_cache(out_dir: Path, url: str) -> dict[str, str]:
    try:
        data = json.loads((out_dir / CACHE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("url") != url:
        return {}
    return {key: value for key, value in data.items() if isinstance(value, str)}


def write_cache(out_dir: Path, url: str, fetched: Fetched) -> None:
    """Remember the validators of a list that compiled, for the next conditional GET."""
    document = {"url": url, "etag": fetched.etag, "last_modified": fetched.last_modified}
    temporary = out_dir / f"{CACHE_FILE}.{os.getpid()}"
    temporary.write_text(json.dumps(document) + "\n", encoding="utf-8")
    os.replace(temporary, out_dir / CACHE_FILE)


def _read_limited(response: Any, limit: int) -> bytes:
    data: bytes = response.read(limit + 1)
    if len(data) > limit:
        raise FetchError(f"the server sent more than {limit} bytes")
    return data


def _get_once(
    opener: urllib.request.OpenerDirector, url: str, headers: dict[str, str], settings: Settings
) -> Fetched:
    # Only https URLs reach this point (obtain), and redirects must stay on https.
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})  # noqa: S310
    try:
        with opener.open(request, timeout=settings.timeout_seconds) as response:
            data = _read_limited(response, settings.max_bytes)
            return Fetched(data, response.headers.get("ETag"), response.headers.get("Last-Modified"))
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return Fetched(None, headers.get("If-None-Match"), headers.get("If-Modified-Since"))
        raise


def fetch_https(
    url: str,
    settings: Settings,
    conditional: dict[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Fetched:
    """GET ``url`` with bounded retries; transient errors are retried, HTTP 4xx are not."""
    opener = _opener(settings)
    headers = {}
    if conditional and conditional.get("etag"):
        headers["If-None-Match"] = conditional["etag"]
    if conditional and conditional.get("last_modified"):
        headers["If-Modified-Since"] = conditional["last_modified"]
    attempts = max(settings.retries, 0) + 1
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            return _get_once(opener, url, headers, settings)
        except urllib.error.HTTPError as exc:
            last = exc
            if exc.code < 500:
                break
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            last = exc
            if isinstance(getattr(exc, "reason", None), ssl.SSLCertVerificationError):
                break  # a certificate failure does not go away by retrying
        if attempt + 1 < attempts:
            sleep(min(BACKOFF_CAP, 2.0**attempt))
    raise FetchError(f"cannot fetch {url}: {last}")


def read_local(source: str, limit: int) -> Fetched:
    """A local path or ``file://`` URL."""
    path = Path(unquote(urlsplit(source).path)) if source.startswith("file://") else Path(source)
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise FetchError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return Fetched(data)  # over ``limit``, the parser refuses it and says so


def obtain(settings: Settings, conditional: dict[str, str] | None = None) -> Fetched:
    """The list bytes from ``settings.source``, whatever its kind."""
    source = settings.source or ""
    scheme = urlsplit(source).scheme.lower()
    if scheme == "https":
        return fetch_https(source, settings, conditional)
    if scheme in ("", "file"):
        return read_local(source, settings.max_bytes)
    raise FetchError(f"unsupported source scheme {scheme!r} (https, file:// or a path)")
