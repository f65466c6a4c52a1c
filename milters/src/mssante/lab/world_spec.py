"""What the lab's hosts are: names, domains, mailboxes, DNS records, Postfix roles and lab.json.

Addresses on the lab's bridge 10.x.y.0/24: gateway .1 (the DNS server), hospital .2 (its ordinary
Postfix and Dovecot), .20 (its future MSSanté instance) and .21 (free for an MSSanté listener of
personal certificates), peer .3, other .4, internet .5.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mssante.lab import labjson, oauth
from mssante.lab import x509util as xu
from mssante.lab.dns import DnsServer, Zone
from mssante.lab.hosts import OVERLAYS, Host, HostNetwork
from mssante.lab.labjson import certificate, mailbox
from mssante.lab.pki import Pki
from mssante.lab.servers import POSTFIX_LOG, VMAIL_BASE, MailServer, Mailstore
from mssante.lab.trustlist import LIST_DIR, LIST_FILE, subject_dn
from mssante.lab.x509util import Profile, Subject

HOSPITAL_MSSANTE_SUFFIX = 20
HOSPITAL_PERSONAL_SUFFIX = 21  # free for an MSSanté listener of personal certificates (Dovecot)
HOSPITAL_DOMAIN = "hopital-a.mssante.test"
HOSPITAL_INTERNET_DOMAIN = "hopital-a.test"
HOSPITAL_ORDINARY_HOST = "mail.hopital-a.test"
INTERNET_DOMAIN = "ailleurs.test"
INTERNET_HOST = "mx.ailleurs.test"
# The hospital's ordinary (internet) users, served by its ordinary Postfix and Dovecot.
ORDINARY_USERS = (("jean.dupont@hopital-a.test", "PER"), ("accueil@hopital-a.test", "ORG"))
PEER_MAILBOXES = ("dr.durand@clinique-b.mssante.test", "secretariat@clinique-b.mssante.test")
OTHER_MAILBOXES = ("biologiste@labo-c.mssante.test",)
INTERNET_MAILBOXES = ("alice@ailleurs.test", "bob@ailleurs.test")
APP_OWNER = "dpi-app"  # the DPI application's identity (token subject) as owner of its mailbox
PUBLIC_HOSTS = {"hospital": HOSPITAL_ORDINARY_HOST, "internet": INTERNET_HOST}
METRICS_URLS = {
    "milter": "http://127.0.0.1:9741/metrics",
    "journal": "http://127.0.0.1:9742/metrics",
    "delivery": "http://127.0.0.1:9743/metrics",
}


def address(network: HostNetwork, name: str) -> str:
    return next(host.address for host in network.hosts if host.name == name)


def mssante_address(network: HostNetwork) -> str:
    return f"{network.prefix}.{HOSPITAL_MSSANTE_SUFFIX}"


def personal_address(network: HostNetwork) -> str:
    return f"{network.prefix}.{HOSPITAL_PERSONAL_SUFFIX}"


def zone(network: HostNetwork) -> Zone:
    """A and MX records of every lab domain."""
    addresses = {
        HOSPITAL_ORDINARY_HOST: address(network, "hospital"),
        "mx.hopital-a.test": mssante_address(network),
        "mx.clinique-b.test": address(network, "peer"),
        "mx2.clinique-b.test": address(network, "peer"),
        "mx.labo-c.test": address(network, "other"),
        INTERNET_HOST: address(network, "internet"),
    }
    mx = {
        HOSPITAL_INTERNET_DOMAIN: HOSPITAL_ORDINARY_HOST,
        HOSPITAL_DOMAIN: "mx.hopital-a.test",
        "clinique-b.mssante.test": "mx.clinique-b.test",
        "labo-c.mssante.test": "mx.labo-c.test",
        INTERNET_DOMAIN: INTERNET_HOST,
    }
    return Zone(addresses, mx)


# ---- certificates of the internet-facing servers (outside IGC-Santé) --------------------------------
def ensure_public_certs(pki: Pki, directory: Path) -> bool:
    """Server certificates for the hospital's ordinary host and the internet host, issued by the
    PKI's foreign CA (an ordinary public CA, outside IGC-Santé); kept while valid. True when written."""
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    ca_cert = xu.load_cert(pki.foreign_ca.cert)
    ca_key = serialization.load_pem_private_key(pki.foreign_ca.key.read_bytes(), password=None)
    assert ca_cert is not None and isinstance(ca_key, rsa.RSAPrivateKey)
    changed = False
    now = xu.utcnow()
    for name, hostname in PUBLIC_HOSTS.items():
        key, generated = xu.ensure_key(directory / f"{name}.key")
        cert = xu.load_cert(directory / f"{name}.pem")
        fits = cert is not None and not generated and xu.same_key(cert, key) and xu.signed_by(cert, ca_cert)
        if not fits or cert is None or xu.not_after(cert) < now + timedelta(days=30):
            window = (now - xu.CLOCK_SKEW, now + timedelta(days=397))
            subject = Subject(hostname, "LAB PUBLIC SERVER (TEST)")
            cert = xu.make_leaf(subject, key, (ca_cert, ca_key), window, Profile.SERVER)
            xu.write_atomic(directory / f"{name}.pem", xu.pem(cert) + xu.pem(ca_cert))
            changed = True
        changed |= generated
    return changed


# ---- the mail servers -------------------------------------------------------------------------------
def _operator_server(network: HostNetwork, pki: Pki, name: str, mailboxes: tuple[str, ...]) -> MailServer:
    leaf = pki.operators[name]
    assert leaf.domain is not None
    policy = {}
    for other_name, other in pki.operators.items():
        if other_name != name and other.domain is not None:
            policy[other.domain] = f"secure match={other.cn} protocols=>=TLSv1.2"
    return MailServer(
        hostname=leaf.cn,
        listen=[address(network, name)],
        domains=[leaf.domain],
        mailboxes=mailboxes,
        tls={
            "smtpd_tls_chain_files": f"{leaf.key}, {leaf.fullchain}",
            "smtpd_tls_security_level": "encrypt",
            "smtpd_tls_ask_ccert": "yes",
            "smtpd_tls_CAfile": str(pki.chain),
            "smtpd_tls_CApath": "",
            "smtpd_tls_protocols": ">=TLSv1.2",
            "smtpd_tls_mandatory_protocols": ">=TLSv1.2",
            "smtp_tls_chain_files": f"{leaf.key}, {leaf.fullchain}",
            "smtp_tls_CAfile": str(pki.chain),
            "smtp_tls_CApath": "",
            "smtp_tls_security_level": "secure",
            "smtp_tls_mandatory_protocols": ">=TLSv1.2",
        },
        restrictions={
            "smtpd_relay_restrictions": "reject_unauth_destination",
            "smtpd_recipient_restrictions": "permit_tls_all_clientcerts, reject",
        },
        transport={domain: "smtp:" for domain in policy},
        tls_policy=policy,
        default_transport="error:5.7.1 domain not in the MSSante trust space (lab)",
    )


def mail_servers(network: HostNetwork, pki: Pki, public: Path) -> dict[str, MailServer]:
    hospital = MailServer(
        hostname=HOSPITAL_ORDINARY_HOST,
        listen=[address(network, "hospital")],
        domains=[HOSPITAL_INTERNET_DOMAIN],
        mailboxes=[user for user, _ in ORDINARY_USERS],
        tls={
            "smtpd_tls_chain_files": f"{public / 'hospital.key'}, {public / 'hospital.pem'}",
            "smtpd_tls_security_level": "may",
            "smtp_tls_security_level": "may",
        },
        restrictions={
            "smtpd_relay_restrictions": (
                "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination"
            )
        },
        lmtp=True,
        submission=True,
    )
    internet = MailServer(
        hostname=INTERNET_HOST,
        listen=[address(network, "internet")],
        domains=[INTERNET_DOMAIN],
        mailboxes=INTERNET_MAILBOXES,
        tls={
            "smtpd_tls_chain_files": f"{public / 'internet.key'}, {public / 'internet.pem'}",
            "smtpd_tls_security_level": "may",
            "smtp_tls_security_level": "may",
        },
        restrictions={"smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination"},
    )
    return {
        "hospital": hospital,
        "peer": _operator_server(network, pki, "peer", PEER_MAILBOXES),
        "other": _operator_server(network, pki, "other", OTHER_MAILBOXES),
        "internet": internet,
    }


def mailstore(network: HostNetwork, public: Path, passwords: dict[str, str]) -> Mailstore:
    return Mailstore(
        address=address(network, "hospital"),
        hostname=HOSPITAL_ORDINARY_HOST,
        cert=public / "hospital.pem",
        key=public / "hospital.key",
        users={user: passwords[user] for user, _ in ORDINARY_USERS},
    )


# ---- lab.json ---------------------------------------------------------------------------------------
def outside(host: Host, path: str) -> str:
    """Where a file the host created at ``path`` is seen from outside: its overlay's upper layer."""
    for lower in sorted((lower for lower in OVERLAYS if path.startswith(lower + "/")), key=len)[-1:]:
        key = lower.strip("/").replace("/", "_")
        return str(host.base / "upper" / key / path[len(lower) + 1 :])
    return path


def _maildir(host: Host, box: str) -> str:
    local, domain = box.split("@")
    return outside(host, f"{VMAIL_BASE}/{domain}/{local}")


def _host_entry(host: Host, **fields: Any) -> dict[str, Any]:
    entry = {
        "netns": host.netns,
        "pid": host.pid,
        "enter": host.enter(),
        "address": host.address,
        "ordinary_address": None,
        "personal_address": None,
        "smtp_port": 25,
        "submission_port": None,
        "imap_port": None,
        "mssante_domains": [],
        "internet_domains": [],
        "mailboxes": [],
        "ordinary_mailboxes": [],
        "postfix_log": outside(host, POSTFIX_LOG),
    }
    entry.update(fields)
    return entry


def _hospital(network: HostNetwork, pki: Pki, passwords: dict[str, str]) -> dict[str, Any]:
    hospital = network.hosts[0]
    ordinary = [
        {"address": box, "password": passwords[box], "maildir": _maildir(hospital, box)}
        for box, _ in ORDINARY_USERS
    ]
    return _host_entry(
        hospital,
        address=mssante_address(network),
        ordinary_address=hospital.address,
        personal_address=personal_address(network),
        submission_port=587,
        imap_port=143,
        mssante_domains=[HOSPITAL_DOMAIN],
        internet_domains=[HOSPITAL_INTERNET_DOMAIN],
        mailboxes=[
            {**mailbox(f"dr.martin@{HOSPITAL_DOMAIN}", "PER", pki.personal), "owners": [pki.personal.cn]},
            {**mailbox(f"secretariat.cardio@{HOSPITAL_DOMAIN}", "ORG"), "owners": [pki.personal.cn]},
            {
                **mailbox(f"dpi@{HOSPITAL_DOMAIN}", "APP", pki.dpi),
                "owners": [APP_OWNER],
                "cert_cns": [pki.dpi.cn],
            },
        ],
        ordinary_mailboxes=ordinary,
        dovecot_log=outside(hospital, "/var/log/dovecot.log"),
    )


def _hosts(network: HostNetwork, pki: Pki, passwords: dict[str, str]) -> dict[str, Any]:
    _, peer, other, internet = network.hosts
    return {
        "hospital": _hospital(network, pki, passwords),
        "peer": _host_entry(
            peer,
            mssante_domains=[pki.peer.domain],
            mailboxes=[
                mailbox(PEER_MAILBOXES[0], "PER", pki.personal2, maildir=_maildir(peer, PEER_MAILBOXES[0])),
                mailbox(PEER_MAILBOXES[1], "ORG", maildir=_maildir(peer, PEER_MAILBOXES[1])),
            ],
        ),
        "other": _host_entry(
            other,
            mssante_domains=[pki.other.domain],
            mailboxes=[mailbox(box, "PER", maildir=_maildir(other, box)) for box in OTHER_MAILBOXES],
        ),
        "internet": _host_entry(
            internet,
            internet_domains=[INTERNET_DOMAIN],
            ordinary_mailboxes=[
                {"address": box, "password": None, "maildir": _maildir(internet, box)}
                for box in INTERNET_MAILBOXES
            ],
        ),
    }


def build_lab_json(
    root: Path, network: HostNetwork, pki: Pki, server: DnsServer, passwords: dict[str, str]
) -> dict[str, Any]:
    hospital = network.hosts[0]
    authorities = (pki.root, pki.intermediate, pki.personal_ca)
    return {
        "schema": labjson.SCHEMA,
        "dir": str(root),
        "tag": network.tag,
        "network": {"bridge": network.bridge, "gateway": network.gateway, "prefix": f"{network.prefix}.0/24"},
        "dns": {"server": server.address, "config": str(server.config), "log": str(server.log_file)},
        "hosts": _hosts(network, pki, passwords),
        "pki": {
            "dir": str(pki.directory),
            "ca_chain": str(pki.chain),
            "personal_ca": str(pki.personal_chain),
            "public_ca": str(pki.foreign_ca.cert),
            "crls": [str(authority.crl) for authority in authorities],
            "trustlist_signer_ca": str(pki.chain),
            "operators": {name: certificate(leaf) for name, leaf in pki.operators.items()},
            "impostor": certificate(pki.impostor),
            "expired": certificate(pki.expired),
            "revoked": certificate(pki.revoked),
        },
        "trustlist": {
            "source": str(root / LIST_DIR / LIST_FILE),
            "compiled_dir": outside(hospital, "/var/lib/mssante/trustlist"),
            "signer": subject_dn(pki.trustlist_signer.cert),
            "signer_cert": str(pki.trustlist_signer.cert),
        },
        "oauth": {"token_command": oauth.token_command(root), "introspection_url": oauth.INTROSPECTION_URL},
        "metrics_urls": dict(METRICS_URLS),
        "journal_dir": outside(hospital, "/var/lib/mssante/journal"),
        "milter_config": outside(hospital, "/etc/mssante/mssante.yml"),
    }
