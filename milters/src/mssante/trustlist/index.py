"""Read side of the compiled trust list: ``index.json`` and a watcher of the ``current`` link.

The compiler (``mssante-trustlist compile``) writes one directory per generation and switches the
``current`` symbolic link to it atomically. Readers (the milter) use :class:`TrustIndex` for O(1)
lookups and :class:`IndexWatcher` to follow switches without a signal (TRUST-8, docs/configuration.md).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import idna

INDEX_SCHEMA = 1
INDEX_FILE = "index.json"
CURRENT_LINK = "current"


class IndexLoadError(Exception):
    """An ``index.json`` that cannot be read or does not follow the schema."""


class IndexUnavailableError(Exception):
    """No trust index has ever loaded successfully (the caller should fail closed)."""


@dataclass(frozen=True, slots=True)
class DomainEntry:
    """One trust-space domain (or one of the hospital's own domains when ``local``)."""

    a_label: str
    u_label: str
    cns: tuple[str, ...]
    dns: tuple[str, ...]
    local: bool


def _fold(text: str) -> str:
    return text.casefold()


# Full stops that IDNA's label splitting also accepts; Postfix only splits on ".".
_OTHER_DOTS = frozenset("\u3002\uff0e\uff61")


def normalise_domain(domain: str) -> str | None:
    """Return the lower-case A-label of ``domain``, or None when it is not a usable name.

    A trailing dot, an empty label or a name that is not valid IDNA 2008 gives None. No UTS46
    mapping: a spelling that only *maps* to a listed name (fullwidth letters, an ideographic full
    stop, a zero-width space, a soft hyphen) is another string for Postfix, which routes by the
    literal name, so it must not be taken for the listed domain (TRUST-7).
    """
    if not domain or domain.endswith(".") or len(domain) > 1024 or _OTHER_DOTS.intersection(domain):
        return None
    if domain.isascii():
        name = domain.lower()
        if any(not label for label in name.split(".")):
            return None
        return name
    try:
        return idna.encode(domain.lower(), uts46=False).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError, ValueError):
        return None


def parse_timestamp(text: str) -> datetime:
    """Parse an ISO 8601 timestamp with a ``Z`` or numeric offset into an aware datetime."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {text!r}")
    return parsed


def _bad(key: Any, problem: str) -> IndexLoadError:
    return IndexLoadError(f"domains[{key!r}]: {problem}")


def _check_entry(key: Any, value: Any, all_cns: set[str]) -> None:
    """Check one entry in place (defaults filled in) and collect its folded CNs."""
    if type(key) is not str or not key or not key.isascii() or key.lower() != key:
        raise _bad(key, "the key is not a lower-case A-label")
    if type(value) is not dict:
        raise _bad(key, "must be an object")
    u_label = value.setdefault("u_label", key)
    cns = value.setdefault("cns", [])
    dns = value.setdefault("dns", [])
    if type(u_label) is not str or type(value.setdefault("local", False)) is not bool:
        raise _bad(key, "u_label must be a string and local a boolean")
    if type(cns) is not list or type(dns) is not list:
        raise _bad(key, "cns and dns must be lists of strings")
    for cn in cns:
        if type(cn) is not str:
            raise _bad(key, "cns must be a list of strings")
        all_cns.add(cn.casefold())
    for dn in dns:
        if type(dn) is not str:
            raise _bad(key, "dns must be a list of strings")


class TrustIndex:
    """An immutable, loaded ``index.json`` with O(1) lookups by A-label or U-label, any case.

    Entries stay as the decoded JSON objects (checked once at load); a :class:`DomainEntry` is
    built only for the domain looked up, so that loading a large list stays cheap.
    """

    def __init__(
        self,
        domains: dict[str, dict[str, Any]],
        generated: datetime,
        generation: str,
        signer: str | None = None,
        source_sha256: str | None = None,
    ) -> None:
        self.generated = generated
        self.generation = generation
        self.signer = signer
        self.source_sha256 = source_sha256
        self._by_a = domains
        self._by_u: dict[str, str] = {}
        all_cns: set[str] = set()
        local: set[str] = set()
        for key, value in domains.items():
            _check_entry(key, value, all_cns)
            if value["u_label"] != key:
                self._by_u[_fold(value["u_label"])] = key
            if value["local"]:
                local.add(key)
        self._all_cns = frozenset(all_cns)
        self.local_domains: frozenset[str] = frozenset(local)

    @classmethod
    def from_entries(cls, entries: Iterable[DomainEntry], generated: datetime, generation: str) -> TrustIndex:
        """Build an index from entries (tests, tools)."""
        domains = {
            e.a_label: {"u_label": e.u_label, "cns": list(e.cns), "dns": list(e.dns), "local": e.local}
            for e in entries
        }
        return cls(domains, generated=generated, generation=generation)

    @classmethod
    def load(cls, directory: Path | str) -> TrustIndex:
        """Load ``index.json`` from a generation directory, its ``current`` link, or the output dir."""
        base = Path(directory)
        if not (base / INDEX_FILE).exists() and (base / CURRENT_LINK).exists():
            base = base / CURRENT_LINK
        # Resolve the link once so that the content and the generation name belong together.
        resolved = Path(os.path.realpath(base))
        try:
            raw = (resolved / INDEX_FILE).read_bytes()
        except OSError as exc:
            raise IndexLoadError(f"{resolved / INDEX_FILE}: {exc.strerror or exc}") from exc
        return cls.from_json(raw, generation=resolved.name)

    @classmethod
    def from_json(cls, raw: bytes | str, generation: str) -> TrustIndex:
        """Build an index from the text of an ``index.json``; raise IndexLoadError when invalid."""
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise IndexLoadError(f"index.json is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise IndexLoadError("index.json: the top level must be an object")
        if data.get("schema") != INDEX_SCHEMA:
            raise IndexLoadError(f"index.json: schema {data.get('schema')!r} is not {INDEX_SCHEMA}")
        try:
            generated = parse_timestamp(str(data.get("generated", "")))
        except ValueError as exc:
            raise IndexLoadError(f"index.json: generated: {exc}") from exc
        domains = data.get("domains")
        if not isinstance(domains, dict):
            raise IndexLoadError("index.json: domains must be an object")
        signer = data.get("signer")
        digest = data.get("source_sha256")
        return cls(
            domains,
            generated=generated,
            generation=generation,
            signer=signer if isinstance(signer, str) else None,
            source_sha256=digest if isinstance(digest, str) else None,
        )

    def __len__(self) -> int:
        return len(self._by_a)

    def _entry(self, key: str) -> DomainEntry:
        value = self._by_a[key]
        return DomainEntry(key, value["u_label"], tuple(value["cns"]), tuple(value["dns"]), value["local"])

    def entries(self) -> Iterator[DomainEntry]:
        """Every entry, local ones included, in A-label order."""
        return (self._entry(key) for key in sorted(self._by_a))

    def _key(self, domain: str) -> str | None:
        if not isinstance(domain, str):
            return None
        if not domain.isascii() and not domain.endswith("."):
            key = self._by_u.get(_fold(domain))
            if key is not None:
                return key
        key = normalise_domain(domain)
        return key if key is not None and key in self._by_a else None

    def lookup(self, domain: str) -> DomainEntry | None:
        """The entry for ``domain`` (U-label or A-label, any case), or None; never raises."""
        key = self._key(domain)
        return None if key is None else self._entry(key)

    def cn_listed_for(self, domain: str, cn: str) -> bool:
        """True when ``cn`` (case-insensitive) is listed for ``domain``'s certificates."""
        key = self._key(domain)
        if key is None or not isinstance(cn, str):
            return False
        wanted = _fold(cn)
        return any(_fold(listed) == wanted for listed in self._by_a[key]["cns"])

    def any_listed_cn(self, cn: str) -> bool:
        """True when ``cn`` is listed for any domain of the trust list."""
        return isinstance(cn, str) and _fold(cn) in self._all_cns

    def is_local(self, domain: str) -> bool:
        """True when ``domain`` is one of the hospital's own MSSanté domains."""
        key = self._key(domain)
        return key is not None and bool(self._by_a[key]["local"])


class IndexWatcher:
    """Follows a ``current`` link and hands out the up-to-date :class:`TrustIndex`.

    ``get()`` re-reads the link target at most every ``interval_ms`` milliseconds (one cheap
    ``readlink``), loads the new generation when the target changed, and keeps the last good
    index when the new one fails to load: it retries at every check, and ``failures`` (and
    ``on_failure``) count each generation that failed once. Callers holding an older index keep a
    consistent, immutable object.
    """

    def __init__(
        self,
        current_link: Path | str,
        interval_ms: int = 1000,
        clock: Callable[[], float] = time.monotonic,
        on_failure: Callable[[Exception], None] | None = None,
    ) -> None:
        self.current_link = Path(current_link)
        self.interval = interval_ms / 1000.0
        self._clock = clock
        self._on_failure = on_failure
        self._lock = threading.Lock()
        self._index: TrustIndex | None = None
        self._token: str | None = None
        self._checked_at: float | None = None
        self._failed_token: str | None = None
        self.failures = 0
        self.last_error: Exception | None = None

    def _target(self) -> tuple[str, Path]:
        """A token naming the generation the link points to, and the directory to load."""
        try:
            target = os.readlink(self.current_link)
        except OSError:
            # Not a link (a plain directory, or missing): use the index file's identity instead.
            stat = (self.current_link / INDEX_FILE).stat()
            return f"{stat.st_ino}:{stat.st_mtime_ns}:{stat.st_size}", self.current_link
        return target, self.current_link.parent / target

    def _refresh(self) -> None:
        token: str | None = None
        try:
            token, directory = self._target()
            if token == self._token and self._index is not None:
                return
            index = TrustIndex.load(directory)
        except (OSError, IndexLoadError) as exc:
            self.last_error = exc
            # Retried at every check, but counted once per generation that fails to load.
            if token is None or token != self._failed_token:
                self._failed_token = token
                self.failures += 1
                if self._on_failure is not None:
                    self._on_failure(exc)
            return
        self._index = index
        self._token = token
        self._failed_token = None

    def get(self) -> TrustIndex:
        """The current index; raises IndexUnavailableError when none ever loaded."""
        now = self._clock()
        checked = self._checked_at
        if checked is None or now - checked >= self.interval:
            with self._lock:
                if self._checked_at is None or now - self._checked_at >= self.interval:
                    self._checked_at = now
                    self._refresh()
        index = self._index
        if index is None:
            raise IndexUnavailableError(f"no usable trust index at {self.current_link}: {self.last_error}")
        return index
