"""One compile attempt: parse, verify, gate, compile, switch, record (TRUST-3, TRUST-8).

Every refusal keeps the list in use and is recorded in ``status.json``. ``--force`` bypasses only
the date and shrink gates, never parsing, the signature or the empty-list gate.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mssante.trustlist import certs, parse, signature
from mssante.trustlist import compile as compiler
from mssante.trustlist.index import CURRENT_LINK, IndexLoadError, TrustIndex
from mssante.trustlist.model import Outcome, Refusal, TrustList
from mssante.trustlist.settings import Settings
from mssante.trustlist.status import Status, read_status, write_status

LOCK_FILE = ".lock"


@dataclass(frozen=True)
class Result:
    """What one attempt did; ``outcome.exit_code`` is the command's exit status."""

    outcome: Outcome
    message: str
    generation: str | None = None


def gate(new: TrustList, previous: TrustIndex | None, max_shrink: float, force: bool) -> None:
    """Refuse an empty list; unless ``force``, one older than ``previous`` or losing too many of its domains.

    The shrink gate counts the current list's domains missing from the new one (not the net
    change), so replacing many domains by as many others is caught too.
    """
    if not new.domains:
        raise Refusal(Outcome.REFUSED_EMPTY, "the list has no domain")
    if previous is None:
        return
    if new.generated < previous.generated and not force:
        raise Refusal(
            Outcome.REFUSED_OLDER,
            f"generation date {new.generated:%Y-%m-%dT%H:%M:%SZ} is older than the current list's "
            f"{previous.generated:%Y-%m-%dT%H:%M:%SZ} (use --force to accept)",
        )
    listed = [entry.a_label for entry in previous.entries() if entry.dns]
    lost = sum(1 for key in listed if key not in new.domains)
    if listed and lost / len(listed) > max_shrink and not force:
        raise Refusal(
            Outcome.REFUSED_SHRINK,
            f"the list loses {lost} of the current {len(listed)} domains ({lost / len(listed):.0%}), "
            f"more than {max_shrink:.0%} (use --force to accept)",
        )


def read_list(data: bytes, settings: Settings, now: datetime | None = None) -> TrustList:
    """Parse and (when required or configured) verify ``data``; raise Refusal."""
    root = parse.parse_document(data, settings.max_bytes)
    signer_name: str | None = None
    can_verify = settings.ca_file is not None and bool(settings.signer)
    if settings.require_signature or (can_verify and signature.find_signature(root) is not None):
        if settings.ca_file is None or not settings.signer:
            raise Refusal(Outcome.REFUSED_SIGNATURE, "no CA or pinned signer to verify the signature with")
        try:
            anchors = certs.load_bundle(settings.ca_file)
        except (OSError, certs.CertificateError) as exc:
            raise Refusal(Outcome.REFUSED_SIGNATURE, f"cannot read the CA bundle: {exc}") from exc
        signer = signature.verify(root, anchors, settings.signer, now)
        signer_name = signer.subject.rfc4514_string()
    else:
        signature.strip_signature(root)
    return parse.extract(root, signer_name)


def _previous(out_dir: Path) -> TrustIndex | None:
    if compiler.current_target(out_dir) is None:
        return None
    try:
        return TrustIndex.load(out_dir / CURRENT_LINK)
    except IndexLoadError:
        return None  # a broken current list gives no baseline; the new list must still pass the rest


def _current_index_bytes(out_dir: Path) -> bytes | None:
    target = compiler.current_target(out_dir)
    try:
        return (target / "index.json").read_bytes() if target else None
    except OSError:
        return None


@contextmanager
def locked(out_dir: Path) -> Iterator[None]:
    """One compile at a time per output directory."""
    out_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    with open(out_dir / LOCK_FILE, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _describe(trust_list: TrustList, generation: str, digest: str) -> dict[str, object]:
    return {
        "generation": generation,
        "generated": trust_list.generated.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "entries": trust_list.entries,
        "domains": len(trust_list.domains),
        "signer": trust_list.signer,
        "source_sha256": digest,
    }


def _attempt(
    data: bytes, settings: Settings, out_dir: Path, now: datetime
) -> tuple[Result, dict[str, object]]:
    digest = hashlib.sha256(data).hexdigest()
    trust_list = read_list(data, settings, now)
    gate(trust_list, _previous(out_dir), settings.max_shrink, settings.force)
    locals_ = [parse.normalise_name(name) for name in settings.local_domains]
    document = compiler.index_document(trust_list, locals_, digest)
    target = compiler.current_target(out_dir)
    current = _current_index_bytes(out_dir) if target is not None else None
    compiled = compiler.index_bytes(document) if current is not None else None
    if target is not None and current is not None and current == compiled:
        message = "same content as the current list: nothing to switch"
        return Result(Outcome.UNCHANGED, message, target.name), _describe(trust_list, target.name, digest)
    try:
        generation = compiler.build_generation(out_dir, document, settings.postfix_config_dir, now, compiled)
        compiler.switch(out_dir, generation)
    except (OSError, compiler.CompileError) as exc:
        return Result(Outcome.COMPILE_FAILED, f"compiling failed: {exc}"), {}
    compiler.prune(out_dir, settings.keep_generations)
    message = (
        f"switched to {generation.name}: {len(trust_list.domains)} domains, {trust_list.entries} entries"
    )
    return Result(Outcome.SWITCHED, message, generation.name), _describe(trust_list, generation.name, digest)


def run(data: bytes, settings: Settings, now: datetime | None = None) -> Result:
    """Compile ``data`` into ``settings.out_dir``; record the outcome in status.json."""
    assert settings.out_dir is not None
    out_dir = settings.out_dir
    moment = now or datetime.now(UTC)
    with locked(out_dir):
        try:
            result, described = _attempt(data, settings, out_dir, moment)
        except Refusal as refusal:
            result, described = Result(refusal.outcome, refusal.message), {}
        record(out_dir, result, moment, described)
    return result


def record(out_dir: Path, result: Result, now: datetime, described: dict[str, object] | None = None) -> None:
    """Write the attempt's outcome into status.json (the list in use is unchanged on refusal)."""
    try:
        previous = read_status(out_dir)
    except ValueError:
        previous = Status()
    write_status(out_dir, previous.after(result.outcome, result.message, now, **(described or {})))
