"""Fixtures shared by every test: the test PKI and real servers (Postfix, Dovecot, SMTP sink, test hosts).

Every server runs under a fresh 0755 directory in /var/tmp, on a random 127.x.y.z address (or in a
test host's namespaces), and is stopped at teardown even when the test failed; its log tail is
printed at teardown, so a failing test shows it. MSSANTE_KEEP_TEST_DIRS=1 keeps the directories.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from tests.support.common import LOCAL, Runner, free_port, make_base_dir, random_loopback, remove_base_dir
from tests.support.dovecot import DovecotInstance
from tests.support.hosts import HostNetwork, TestHost
from tests.support.postfix import PostfixInstance
from tests.support.sink import Sink

from mssante.lab.pki import Leaf, Pki, ensure_pki

REPO = Path(__file__).resolve().parent.parent
PKI_DIR_ENV = "MSSANTE_TEST_PKI_DIR"


@pytest.fixture(scope="session")
def pki() -> Pki:
    """The test PKI (docs/test-pki.md), kept across runs in .cache/test-pki (or $MSSANTE_TEST_PKI_DIR)."""
    return ensure_pki(Path(os.environ.get(PKI_DIR_ENV, REPO / ".cache" / "test-pki")))


@pytest.fixture
def base_dir() -> Iterator[Path]:
    """A fresh 0755 directory under /var/tmp for this test (Postfix and Dovecot can traverse it)."""
    path = make_base_dir("test")
    yield path
    remove_base_dir(path)


PostfixFactory = Callable[..., PostfixInstance]


@pytest.fixture
def postfix_factory() -> Iterator[PostfixFactory]:
    """``make(name="mta", *, address=None, port=None, settings=None, smtpd_options=None, runner=LOCAL,
    start=False) -> PostfixInstance``: a clean instance under its own temp dir, stopped at teardown."""
    made: list[tuple[PostfixInstance, Path | None]] = []

    def make(
        name: str = "mta",
        *,
        address: str | None = None,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
        smtpd_options: Mapping[str, str] | None = None,
        runner: Runner = LOCAL,
        start: bool = False,
    ) -> PostfixInstance:
        if any(instance.name == name for instance, _ in made):
            raise ValueError(f"a Postfix instance named {name!r} exists already in this test")
        address = address or random_loopback()
        base = make_base_dir(f"postfix-{name}")
        instance = PostfixInstance.create(
            base,
            name,
            address=address,
            port=port or free_port(address),
            settings=settings,
            smtpd_options=smtpd_options,
            runner=runner,
        )
        made.append((instance, base))
        if start:
            instance.start()
        return instance

    yield make
    for instance, _ in made:
        instance.terminate()  # all at once: a master takes about a second to exit
    for instance, base in reversed(made):
        try:
            instance.stop()
        finally:
            print(instance.log_tail())
            if base is not None:
                remove_base_dir(base)


SinkFactory = Callable[..., Sink]


@pytest.fixture
def sink_factory() -> Iterator[SinkFactory]:
    """``make(*, address=None, port=None, tls: Leaf | None = None, client_ca=None,
    require_client_cert=False, require_starttls=False) -> Sink``, started; stopped at teardown."""
    made: list[Sink] = []

    def make(
        *,
        address: str | None = None,
        port: int | None = None,
        tls: Leaf | None = None,
        client_ca: Path | None = None,
        require_client_cert: bool = False,
        require_starttls: bool = False,
    ) -> Sink:
        address = address or random_loopback()
        sink = Sink(
            address,
            port or free_port(address),
            tls_cert=tls.fullchain if tls else None,
            tls_key=tls.key if tls else None,
            client_ca=client_ca,
            require_client_cert=require_client_cert,
            require_starttls=require_starttls,
        )
        made.append(sink)
        return sink.start()

    yield make
    for sink in made:
        sink.stop()


@pytest.fixture
def sink(sink_factory: SinkFactory) -> Sink:
    """A plain SMTP sink (no TLS) on a random loopback address."""
    return sink_factory()


DovecotFactory = Callable[..., DovecotInstance]


@pytest.fixture
def dovecot_factory(pki: Pki) -> Iterator[DovecotFactory]:
    """``make(name="imap", *, address=None, cert: Leaf | None = None, users=None, extra_config="",
    runner=LOCAL, start=True) -> DovecotInstance``: IMAP + LMTP + Postfix auth socket; stopped at
    teardown. ``cert`` defaults to the hospital's server certificate."""
    made: list[DovecotInstance] = []

    def make(
        name: str = "imap",
        *,
        address: str | None = None,
        cert: Leaf | None = None,
        users: Mapping[str, str] | None = None,
        extra_config: str = "",
        runner: Runner = LOCAL,
        start: bool = True,
    ) -> DovecotInstance:
        address = address or random_loopback()
        leaf = cert or pki.hospital
        instance = DovecotInstance(
            name=name,
            address=address,
            imap_port=free_port(address),
            lmtp_port=free_port(address),
            base=make_base_dir(f"dovecot-{name}"),
            cert=leaf.fullchain,
            key=leaf.key,
            users=dict(users or {}),
            extra_config=extra_config,
            runner=runner,
        )
        made.append(instance)
        if start:
            instance.start()
        return instance

    yield make
    for instance in reversed(made):
        try:
            instance.stop()
        finally:
            print(instance.log_tail())
            remove_base_dir(instance.base)


@pytest.fixture
def host_network() -> Iterator[HostNetwork]:
    """A bridge with a random 10.x.y.0/24 for this test's hosts; everything removed at teardown."""
    network = HostNetwork.create()
    yield network
    network.destroy()


HostFactory = Callable[[str], TestHost]


@pytest.fixture
def host_factory(host_network: HostNetwork) -> HostFactory:
    """``make(name) -> TestHost``: a host with its own network, mount and UTS namespaces."""
    return host_network.add_host
