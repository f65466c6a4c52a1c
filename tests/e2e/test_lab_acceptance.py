"""The acceptance suite of issue 9: the scenario matrix over real SMTP and IMAP between the lab's hosts.

One lab for the whole module, built exactly as `make lab` builds it (`ansible-playbook -i
inventories/lab playbooks/lab.yml`) under a temporary directory with its own tag, so a running
`make lab` is never disturbed; removed with `-e lab_state=absent` at the end. Every client runs inside
the host it stands for (lab.json's ``enter``). Refusals have controls: the same client with the right
certificate, TLS version or sender gets through. Requirements: TRUST-3, TRUST-6, TRUST-7, TLS-1,
TLS-3, TLS-5, AUTH-2, MSG-3, TRACE-1.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.support.ansible import playbook, recap
from tests.support.common import wait_until

from mssante.lab.pki import ensure_pki
from mssante.lab.scenario import (
    INTERNET_SENDER,
    METRICS_PROBE,
    MSSANTE_LOG,
    PEER_SENDER,
    Lab,
    imap_tags,
    journal_json,
    last_reply,
    refused,
    smtp,
)
from mssante.lab.trustlist import write_lab_list

pytestmark = [pytest.mark.devonly, pytest.mark.timeout(3600)]

REPO = Path(__file__).resolve().parents[2]
TRUSTLIST_FETCH = [
    "runuser", "-u", "mssante", "--", "/opt/mssante/bin/mssante-trustlist", "fetch",
    "--config", "/etc/mssante/mssante.yml", "--json",
]  # fmt: skip
RELOAD_MSSANTE = ["postmulti", "-i", "postfix-mssante", "-p", "reload"]
SUPERVISORCTL = ["supervisorctl", "-c", "/etc/supervisor/supervisord.conf"]


@dataclass
class Built:
    lab: Lab
    first: subprocess.CompletedProcess[str]
    directory: Path


def lab_playbook(lab_dir: Path, tag: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """`make lab` (or `make lab-down` with -e lab_state=absent) for a lab under ``lab_dir``."""
    variables = ["-e", f"lab_dir={lab_dir}", "-e", f"lab_tag={tag}"]
    # A snapshot of milters/: every run builds the wheel from the same sources while the checkout
    # changes under them (the role reinstalls on any change, by design).
    variables += ["-e", f"mssante_wheel_source_dir={lab_dir.parent / 'milters'}"]
    return playbook("lab.yml", REPO / "inventories" / "lab", [*variables, *extra], timeout=2400)


@pytest.fixture(scope="module")
def built() -> Iterator[Built]:
    base = Path(tempfile.mkdtemp(prefix="mssante-acceptance-", dir="/var/tmp"))
    base.chmod(0o755)
    lab_dir, tag = base / "lab", "a" + secrets.token_hex(2)
    shutil.copytree(
        REPO / "milters",
        base / "milters",
        ignore=shutil.ignore_patterns(".*", "__pycache__", "*.egg-info", "build", "dist"),
    )
    try:
        first = lab_playbook(lab_dir, tag)
        assert (lab_dir / "lab.json").exists(), first.stdout[-6000:] + first.stderr[-3000:]
        yield Built(Lab(lab_dir), first, base)
    finally:
        lab_playbook(lab_dir, tag, "-e", "lab_state=absent", "--limit", "localhost")
        if not os.environ.get("MSSANTE_KEEP_TEST_DIRS"):
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def lab(built: Built) -> Lab:
    return built.lab


# ---- helpers ---------------------------------------------------------------------------------------
def peer_send(
    lab: Lab, leaf: str, *, sender: str = PEER_SENDER, subject: str | None = None
) -> dict[str, Any]:
    """A peer-side SMTP transaction to the hospital's MSSanté instance with certificate ``leaf``."""
    cert = lab.leaf(leaf)
    return smtp(
        lab, "peer", server=lab.hospital["address"], port=25, starttls=True, cert=cert["cert"],
        key=cert["key"], mail=sender, rcpt=[lab.mailbox("APP")["address"]], subject=subject,
    )  # fmt: skip


def app_submit(lab: Lab, rcpt: str, subject: str | None = None, **extra: Any) -> dict[str, Any]:
    """The APP mailbox submits on 587 with its certificate."""
    app = lab.mailbox("APP")
    return smtp(
        lab, "hospital", server=lab.hospital["address"], port=587, starttls=True, cert=app["cert"],
        key=app["key"], mail=app["address"], rcpt=[rcpt], subject=subject, **extra,
    )  # fmt: skip


def queue_id(answer: dict[str, Any]) -> str:
    code, text = last_reply(answer)
    match = re.search(r"queued as (\S+)", text)
    assert code == 250 and match, answer
    return match.group(1)


def mssante_log(lab: Lab) -> str:
    path = lab.hospital_file(MSSANTE_LOG)
    return path.read_text(errors="replace") if path.exists() else ""


def wait_status(lab: Lab, qid: str, status: str, timeout: float = 120) -> str:
    pattern = re.compile(rf"(?m)^.*{re.escape(qid)}: to=<[^>]+>.*status={status}.*$")
    return wait_until(
        lambda: (m := pattern.search(mssante_log(lab))) and m.group(0), timeout, f"{qid} status={status}"
    )


def maildir_with(maildir: str, marker: str) -> str | None:
    for path in Path(maildir).glob("*/*"):
        text = path.read_text(errors="replace")
        if marker in text:
            return text
    return None


def in_host(
    lab: Lab, host: str, argv: list[str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    enter = list(lab.host(host)["enter"])
    return subprocess.run(
        [*enter, *argv], input=stdin, capture_output=True, text=True, check=False, timeout=120
    )


def milter_pid(lab: Lab) -> str:
    return in_host(lab, "hospital", [*SUPERVISORCTL, "pid", "mssante-milter"]).stdout.strip()


def switch_trust_list(lab: Lab, operators: tuple[str, ...], *, force: bool) -> dict[str, Any]:
    """Rewrite the lab's signed list, run the refresh job now (as its service does), reload Postfix."""
    pki = ensure_pki(Path(lab.data["pki"].get("dir") or Path(lab.data["pki"]["ca_chain"]).parent))
    write_lab_list(pki, Path(lab.data["trustlist"]["source"]), operators)
    fetch = in_host(lab, "hospital", [*TRUSTLIST_FETCH, *(["--force"] if force else [])])
    assert fetch.returncode == 0, fetch.stdout + fetch.stderr
    reload = in_host(lab, "hospital", RELOAD_MSSANTE)
    assert reload.returncode == 0, reload.stderr
    return dict(json.loads(fetch.stdout))


def metrics(lab: Lab, name: str = "milter") -> dict[str, float]:
    answer = lab.python_in("hospital", METRICS_PROBE, {"url": lab.data["metrics_urls"][name]})
    assert "values" in answer, answer
    return {key: float(value) for key, value in answer["values"].items()}


# ---- make lab ----------------------------------------------------------------------------------------
def test_make_lab_converts_the_hospital_and_prints_the_summary(built: Built) -> None:
    """`make lab`'s playbook builds, converts (site.yml) and prints every flow as expected."""
    result = built.first
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-3000:]
    assert recap(result, "hospital")["failed"] == 0
    for needle in ("flow", "expected", "result", "journal verify", "metrics milter"):
        assert needle in result.stdout, result.stdout[-4000:]
    assert "FAIL " not in result.stdout


def test_make_lab_again_changes_nothing(built: Built) -> None:
    """A second `make lab` is idempotent: the world and site.yml report no change."""
    tag = built.lab.host("hospital")["netns"].split("-")[1]
    again = lab_playbook(built.lab.directory, tag)
    assert again.returncode == 0, again.stdout[-6000:]
    assert recap(again, "hospital")["changed"] == 0, again.stdout[-8000:]
    assert recap(again, "localhost")["changed"] == 0, again.stdout[-8000:]


# ---- inside the trust space ---------------------------------------------------------------------------
def test_tls3_hospital_to_peer_over_mutual_tls_with_verified_cn(lab: Lab) -> None:
    """hospital -> peer: sent over verified TLS to the peer's listed CN; the peer verified ours."""
    marker = lab.marker("acc-out")
    qid = queue_id(app_submit(lab, PEER_SENDER, marker))
    line = wait_status(lab, qid, "sent")
    assert "relay=mx.clinique-b.test[" in line, line
    assert re.search(r"Verified TLS connection established to mx\.clinique-b\.test\[", mssante_log(lab))
    maildir = lab.host("peer")["mailboxes"][0]["maildir"]
    delivered = wait_until(lambda: maildir_with(maildir, marker), 60, "the message in the peer's Maildir")
    assert re.search(r'Client CN "mx\.hopital-a\.test", Issuer "[^"]+" \(verified OK\)', delivered), delivered


def test_trust3_msg3_peer_postfix_to_hospital_fetched_over_imap_with_tags(lab: Lab) -> None:
    """peer's Postfix -> hospital APP mailbox: through the real milter, LMTP, then IMAP with its tags."""
    marker = lab.marker("acc-in")
    app = lab.mailbox("APP")["address"]
    message = f"From: <{PEER_SENDER}>\nTo: <{app}>\nSubject: {marker}\n\nfrom the peer's Postfix\n"
    sent = in_host(lab, "peer", ["sendmail", "-i", "-f", PEER_SENDER, app], stdin=message)
    assert sent.returncode == 0, sent.stderr
    tags = wait_until(lambda: imap_tags(lab, marker), 120, "the message over IMAP")
    assert "X-MSSante-Verdict: pass" in tags and "X-MSSante-Trace" in tags, tags


def test_trust3_peer_bounce_with_null_sender_accepted(lab: Lab) -> None:
    """A peer's bounce (null sender) is accepted from a listed CN; control: the impostor's is refused."""
    answer = peer_send(lab, "peer", sender="", subject=lab.marker("acc-bounce"))
    assert last_reply(answer)[0] == 250, answer
    control = peer_send(lab, "impostor", sender="", subject=lab.marker("acc-bounce-ctl"))
    assert refused(control), control


def oauth_token(lab: Lab, mailbox: str) -> str:
    """A token for ``mailbox``'s owner from lab.json's token command (the lab's identity provider)."""
    command = [part.replace("{mailbox}", mailbox) for part in lab.data["oauth"]["token_command"]]
    env = dict(os.environ, PYTHONPATH=str(REPO / "milters" / "src"))
    result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60, env=env)
    return result.stdout.strip()


def test_auth1_personal_mailbox_submits_with_its_oauth_token(lab: Lab) -> None:
    """A personal mailbox's owner submits on 587 with an OAuth 2 token (XOAUTH2, checked by Dovecot
    at the hospital's introspection endpoint): sent to the peer; control: a forged token gets 535."""
    per = lab.mailbox("PER")
    owner, token = per["owners"][0], oauth_token(lab, per["address"])
    args = {"server": lab.hospital["address"], "port": 587, "starttls": True, "mail": per["address"]}
    args["rcpt"] = [PEER_SENDER]
    answer = smtp(lab, "hospital", xoauth2=[owner, token], subject=lab.marker("acc-oauth"), **args)
    assert [s[1] for s in answer["steps"] if s[0] == "AUTH"][-1] == 235, answer
    wait_status(lab, queue_id(answer), "sent")
    forged = smtp(lab, "hospital", xoauth2=[owner, token[:-4] + "AAAA"], **args)
    assert forged["steps"][-1][0] == "AUTH" and last_reply(forged)[0] == 535, forged


# ---- outside the trust space --------------------------------------------------------------------------
def test_trust7_hospital_mailbox_to_internet_refused_at_rcpt(lab: Lab) -> None:
    """MSSanté mailbox -> internet: refused at RCPT; control: a trust-space recipient is accepted."""
    answer = app_submit(lab, INTERNET_SENDER)
    assert answer["steps"][-1][0] == "RCPT" and refused(answer), answer
    assert "trust space" in last_reply(answer)[1]
    control = app_submit(lab, PEER_SENDER)
    assert last_reply(control)[0] == 250, control


@pytest.mark.parametrize("instance", ["address", "ordinary_address"])
def test_trust6_internet_to_mssante_mailbox_refused_on_both_instances(lab: Lab, instance: str) -> None:
    """internet -> MSSanté mailbox: refused whichever of the hospital's instances it tries."""
    answer = smtp(
        lab, "internet", server=lab.hospital[instance], port=25, starttls=True, optional_tls=True,
        mail=INTERNET_SENDER, rcpt=[lab.mailbox("PER")["address"]], subject=lab.marker("acc-inet"),
    )  # fmt: skip
    assert refused(answer), answer


def test_internet_and_ordinary_domain_unchanged_both_ways(lab: Lab) -> None:
    """internet <-> the hospital's ordinary domain: delivered both ways, as before the conversion."""
    ordinary = lab.hospital["ordinary_mailboxes"][0]
    internet = lab.host("internet")["ordinary_mailboxes"][0]
    marker_in, marker_out = lab.marker("acc-ord-in"), lab.marker("acc-ord-out")
    answer = smtp(
        lab, "internet", server=lab.hospital["ordinary_address"], port=25, starttls=True, optional_tls=True,
        mail=internet["address"], rcpt=[ordinary["address"]], subject=marker_in,
    )  # fmt: skip
    assert last_reply(answer)[0] == 250, answer
    wait_until(lambda: maildir_with(ordinary["maildir"], marker_in), 60, "internet -> ordinary delivery")
    message = f"From: <{ordinary['address']}>\nTo: <{internet['address']}>\nSubject: {marker_out}\n\nout\n"
    sent = in_host(
        lab, "hospital", ["sendmail", "-i", "-f", ordinary["address"], internet["address"]], message
    )
    assert sent.returncode == 0, sent.stderr
    wait_until(lambda: maildir_with(internet["maildir"], marker_out), 90, "ordinary -> internet delivery")


# ---- refused peers, with controls ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("leaf", "reason"),
    [
        ("other", "peer-cn-not-listed-for-domain"),  # a listed CN, of the third operator's domain
        ("impostor", "peer-cert-missing"),  # the peer's CN from a foreign CA
        ("expired", "peer-cert-missing"),  # a listed CN, expired
    ],
)
def test_trust3_tls3_peer_with_wrong_certificate_refused(lab: Lab, leaf: str, reason: str) -> None:
    answer = peer_send(lab, leaf, subject=lab.marker(f"acc-{leaf}"))
    assert refused(answer), answer
    assert reason in last_reply(answer)[1] or "5.7.1" in last_reply(answer)[1], answer
    control = peer_send(lab, "peer", subject=lab.marker(f"acc-{leaf}-ctl"))
    assert last_reply(control)[0] == 250, control


@pytest.mark.parametrize("port", [25, 587])
def test_tls5_plaintext_refused_never_downgraded(lab: Lab, port: int) -> None:
    """Without STARTTLS, MAIL is refused (530); control: the same client after STARTTLS gets further."""
    args = {"server": lab.hospital["address"], "port": port, "mail": PEER_SENDER, "rcpt": ["x@y.test"]}
    answer = smtp(lab, "peer", starttls=False, **args)
    assert answer["steps"][-1][0] == "MAIL" and last_reply(answer)[0] == 530, answer
    control = smtp(lab, "peer", starttls=True, **args)
    assert [s[0] for s in control["steps"]][:3] == ["EHLO", "STARTTLS", "MAIL"], control
    assert control["tls"] in ("TLSv1.2", "TLSv1.3"), control


@pytest.mark.parametrize("port", [25, 587])
def test_tls1_tls_1_1_refused_never_downgraded(lab: Lab, port: int) -> None:
    """A client capped at TLS 1.1 gets no session and no MAIL; control: capped at TLS 1.2 it gets one."""
    peer = lab.leaf("peer")
    args = {"server": lab.hospital["address"], "port": port, "cert": peer["cert"], "key": peer["key"]}
    args |= {"starttls": True, "mail": PEER_SENDER, "rcpt": [lab.mailbox("APP")["address"]]}
    answer = smtp(lab, "peer", tls_max="TLSv1_1", **args)
    assert answer["tls"] is None and answer["steps"][-1][0] == "ERROR", answer
    assert "MAIL" not in [step[0] for step in answer["steps"]], answer
    control = smtp(lab, "peer", tls_max="TLSv1_2", **args)
    assert control["tls"] == "TLSv1.2", control


# ---- trust-list update ----------------------------------------------------------------------------------
def test_trust7_peer_removed_then_readded_without_restart_queued_mail_bounced(lab: Lab) -> None:
    """Removing the peer (--force: the shrink gate) takes effect without restarting anything; mail
    queued for it meanwhile is bounced, never sent; re-adding it restores both directions."""
    pid = milter_pid(lab)
    assert pid.isdigit(), pid
    peer_maildir = lab.host("peer")["mailboxes"][0]["maildir"]
    in_host(lab, "peer", ["postfix", "stop"])
    try:
        marker = lab.marker("acc-queued")
        qid = queue_id(app_submit(lab, PEER_SENDER, marker))
        wait_status(lab, qid, "deferred")
        switch_trust_list(lab, ("hospital", "other"), force=True)
        in_host(lab, "hospital", ["postqueue", "-c", "/etc/postfix-mssante", "-i", qid])
        line = wait_status(lab, qid, "bounced")
        assert "domain not in the MSSanté trust space" in line, line
        now_refused = wait_until(lambda: refused(a := peer_send(lab, "peer")) and a, 30, "the peer refused")
        assert "sender-domain-not-listed" in last_reply(now_refused)[1] or refused(now_refused)
        assert refused(app_submit(lab, PEER_SENDER))
    finally:
        in_host(lab, "peer", ["postfix", "start"])
    assert maildir_with(peer_maildir, marker) is None
    switch_trust_list(lab, ("hospital", "peer", "other"), force=False)
    wait_until(lambda: last_reply(peer_send(lab, "peer"))[0] == 250, 30, "the peer accepted again")
    again = queue_id(app_submit(lab, PEER_SENDER, lab.marker("acc-readded")))
    wait_status(lab, again, "sent")
    assert milter_pid(lab) == pid  # nothing was restarted


# ---- after the run: journal and metrics -----------------------------------------------------------------
def test_trace1_journal_verifies_and_holds_the_records_of_the_flows(lab: Lab) -> None:
    verify = journal_json(lab, "verify", "--json")
    assert verify["exit"] == 0 and verify["ok"], verify
    shown = in_host(
        lab, "hospital", ["/opt/mssante/bin/mssante-journal", "show", "--dir", "/var/lib/mssante/journal"]
    )
    records = [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]
    kinds = {(r["type"], r.get("direction"), r.get("reason")) for r in records}
    assert ("accepted", "inbound", None) in {(t, d, None) for t, d, _ in kinds if t == "accepted"}
    assert ("accepted", "outbound", None) in {(t, d, None) for t, d, _ in kinds if t == "accepted"}
    refused_reasons = {reason for kind, _, reason in kinds if kind == "refused"}
    assert {"rejected-by-mta", "peer-cn-not-listed-for-domain"} <= refused_reasons, refused_reasons
    for record in records:  # identifiers and digests only, never the content
        assert "subject" not in record and "body" not in record


def test_trace1_unauthenticated_refusals_aggregated_in_the_journal(lab: Lab) -> None:
    """Refusals of unauthenticated clients are journaled per window as refused-aggregate records."""

    def aggregated() -> list[dict[str, Any]]:
        argv = ["/opt/mssante/bin/mssante-journal", "show", "--dir", "/var/lib/mssante/journal"]
        shown = in_host(lab, "hospital", [*argv, "--type", "refused-aggregate"])
        return [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]

    def poke() -> list[dict[str, Any]]:
        peer_send(lab, "impostor")  # a refusal after the window closed flushes it
        return aggregated()

    # Two anonymous reasons in one window: a certificate-less peer (25) and an unauthenticated client (587).
    for port in (25, 587):
        smtp(lab, "internet", server=lab.hospital["address"], port=port, starttls=True, mail=INTERNET_SENDER,
             rcpt=[lab.mailbox("PER")["address"]])  # fmt: skip
    found = wait_until(lambda: aggregated() or (time.sleep(5) or poke()), 180, "a refused-aggregate record")
    assert any("peer-cert-missing" in json.dumps(record) for record in found), found


def test_metrics_counters_match_the_matrix(lab: Lab) -> None:
    """The milter's counters show every decision of the matrix (labels from closed enums only)."""
    values = metrics(lab)

    def count(direction: str, decision: str, reason: str) -> float:
        labels = f'decision="{decision}",direction="{direction}",reason="{reason}"'
        key = f"mssante_milter_decisions_total{{{labels}}}"
        return values.get(key, 0.0)

    assert count("inbound", "accept", "accepted") >= 4  # scenario, Postfix peer, bounce, controls
    assert count("outbound", "accept", "accepted") >= 3
    assert count("inbound", "refuse", "peer-cert-missing") >= 4  # internet, impostor, expired
    assert count("inbound", "refuse", "peer-cn-not-listed-for-domain") >= 1
    assert count("outbound", "refuse", "rejected-by-mta") >= 1
    assert values.get('mssante_milter_refusals_aggregated_total{reason="peer-cert-missing"}', 0) >= 4
    assert not any("hopital" in key or "clinique" in key for key in values), "personal data in labels"
