"""`python3 -m mssante.lab scenario --dir DIR [--json]`: the lab's short scenario (docs/lab.md).

Reads DIR/lab.json and runs, over real SMTP and IMAP, the flows that show the trust space at work:
each client runs inside the host it stands for (the host's ``enter`` prefix from lab.json), so the
hospital sees the peer's, the impostor's or the internet's own address. Then the hospital's journal
is verified with ``mssante-journal verify`` and its metrics pages are read. The output is a table
(flow, expected, result); exit status 0 when every flow went as expected, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Default paths inside the converted hospital (the roles' defaults).
JOURNAL = "/opt/mssante/bin/mssante-journal"
JOURNAL_DIR = "/var/lib/mssante/journal"
JOURNAL_KEY = "/etc/mssante/journal/signing.pub"
MSSANTE_LOG = "/var/log/postfix-mssante.log"
PEER_SENDER = "dr.durand@clinique-b.mssante.test"
INTERNET_SENDER = "someone@ailleurs.test"
WAIT_SECONDS = 60.0

# The clients, run inside a lab host with the standard library only; each prints one JSON answer.
SMTP_PROBE = r"""
import base64, json, smtplib, ssl, sys
a = json.loads(sys.argv[1]); steps = []; tls = None; helo = a.get("helo", "client.lab.test")
def step(name, reply):
    text = reply[1].decode("utf-8", "replace") if isinstance(reply[1], bytes) else reply[1]
    steps.append([name, reply[0], text])
    return reply[0]
try:
    with smtplib.SMTP(a["server"], a["port"], local_hostname=helo, timeout=60) as c:
        step("EHLO", c.ehlo())
        if a.get("starttls") and (c.has_extn("starttls") or not a.get("optional_tls")):
            ctx = ssl.create_default_context(cafile=a["cafile"]); ctx.check_hostname = False
            if a.get("optional_tls"):
                ctx.verify_mode = ssl.CERT_NONE
            if a.get("tls_max"):
                ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
                ctx.maximum_version = getattr(ssl.TLSVersion, a["tls_max"])
                ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            if a.get("cert"):
                ctx.load_cert_chain(a["cert"], a["key"])
            step("STARTTLS", c.starttls(context=ctx)); tls = c.sock.version(); c.ehlo(helo)
        authenticated = True
        if a.get("xoauth2"):  # [login, token]: SASL XOAUTH2 (a failure answers 334 first, then 535)
            blob = "user=%s\x01auth=Bearer %s\x01\x01" % tuple(a["xoauth2"])
            code = step("AUTH", c.docmd("AUTH", "XOAUTH2 " + base64.b64encode(blob.encode()).decode()))
            authenticated = (step("AUTH", c.docmd("")) if code == 334 else code) == 235
        if authenticated and step("MAIL", c.mail(a["mail"])) == 250:
            codes = [step("RCPT", c.rcpt(r)) for r in a["rcpt"]]
            if a.get("subject") and 250 in codes:
                s = a["subject"]
                body = ("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%s@lab.test>\r\n"
                        "\r\nLab message %s.\r\n" % (a["mail"], ">, <".join(a["rcpt"]), s, s, s))
                step("DATA", c.data(body.encode()))
except (OSError, smtplib.SMTPException) as exc:
    steps.append(["ERROR", -1, "%s: %s" % (type(exc).__name__, exc)])
print(json.dumps({"steps": steps, "tls": tls}))
"""

IMAP_PROBE = r"""
import imaplib, json, ssl, sys
from email import message_from_bytes
a = json.loads(sys.argv[1]); out = {}
try:
    ctx = ssl.create_default_context(cafile=a["cafile"]); ctx.check_hostname = False
    ctx.load_cert_chain(a["cert"], a["key"])
    c = imaplib.IMAP4(a["server"], a["port"], timeout=30)
    c.starttls(ssl_context=ctx); c.authenticate("EXTERNAL", lambda _: b"")
    c.select("INBOX", readonly=True)
    found = c.search(None, "SUBJECT", '"%s"' % a["subject"])[1][0].split()
    if found:
        data = c.fetch(found[-1], "(BODY.PEEK[HEADER])")[1][0][1]
        msg = message_from_bytes(data)
        out["tags"] = {k: str(v) for k, v in msg.items() if k.lower().startswith("x-mssante-")}
        out["received"] = [str(v) for v in msg.get_all("Received", [])]
    c.logout()
except Exception as exc:
    out["error"] = "%s: %s" % (type(exc).__name__, exc)
print(json.dumps(out))
"""

METRICS_PROBE = r"""
import json, sys, urllib.request
a = json.loads(sys.argv[1])
try:
    page = urllib.request.urlopen(a["url"], timeout=10).read().decode()
    values = {}
    for line in page.splitlines():
        if line.startswith("mssante_"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    print(json.dumps({"samples": len(values), "values": values}))
except Exception as exc:
    print(json.dumps({"error": "%s: %s" % (type(exc).__name__, exc)}))
"""


@dataclass(frozen=True)
class Flow:
    """One line of the summary: what was tried, what the trust space should do, what it did."""

    flow: str
    expected: str
    result: str
    ok: bool


class Lab:
    """The running lab as lab.json describes it, and the means to act inside its hosts."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data: dict[str, Any] = json.loads((directory / "lab.json").read_text(encoding="utf-8"))
        self.hospital: dict[str, Any] = self.data["hosts"]["hospital"]
        self.run_id = uuid.uuid4().hex[:10]

    def host(self, name: str) -> dict[str, Any]:
        return dict(self.data["hosts"][name])

    def run_in(self, name: str, argv: Sequence[str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
        enter = list(self.host(name)["enter"])
        return subprocess.run([*enter, *argv], capture_output=True, text=True, check=False, timeout=timeout)

    def python_in(self, name: str, script: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run one of the probes (stdlib only) inside host ``name``; its JSON answer."""
        result = self.run_in(name, [sys.executable, "-c", script, json.dumps(args)])
        try:
            return dict(json.loads(result.stdout))
        except ValueError:
            return {"error": (result.stdout + result.stderr).strip()[-400:]}

    def hospital_file(self, path: str) -> Path:
        return Path(f"/proc/{self.hospital['pid']}/root") / path.lstrip("/")

    def mailbox(self, kind: str) -> dict[str, Any]:
        return next(m for m in self.hospital["mailboxes"] if m["type"] == kind)

    def leaf(self, name: str) -> dict[str, Any]:
        pki = self.data["pki"]
        return dict(pki["operators"][name] if name in pki["operators"] else pki[name])

    def marker(self, flow: str) -> str:
        return f"lab-{self.run_id}-{flow}"


def smtp(lab: Lab, client: str, **args: Any) -> dict[str, Any]:
    """An SMTP transaction from host ``client``: every step's reply, the TLS version, the last reply."""
    args.setdefault("cafile", lab.data["pki"]["ca_chain"])
    return lab.python_in(client, SMTP_PROBE, args)


def last_reply(answer: dict[str, Any]) -> tuple[int, str]:
    steps = answer.get("steps") or [["ERROR", -1, answer.get("error", "no answer")]]
    _, code, text = steps[-1]
    return int(code), str(text)


def describe(answer: dict[str, Any]) -> str:
    code, text = last_reply(answer)
    step = (answer.get("steps") or [["ERROR"]])[-1][0]
    return f"{step} {code} {text}".strip()[:110]


def refused(answer: dict[str, Any]) -> bool:
    """A 5xx answer from the server (not a broken connection, not a 4xx)."""
    return 500 <= last_reply(answer)[0] < 600


def wait_for(probe: Callable[[], str | None], timeout: float = WAIT_SECONDS) -> str | None:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def imap_tags(lab: Lab, subject: str) -> str | None:
    """The X-MSSante-* tags of the message titled ``subject`` in the APP mailbox, over IMAP."""
    app = lab.mailbox("APP")
    answer = lab.python_in(
        "hospital",
        IMAP_PROBE,
        {
            "server": lab.hospital["address"],
            "port": lab.hospital.get("imap_port") or 143,
            "cafile": lab.data["pki"]["ca_chain"],
            "cert": app["cert"],
            "key": app["key"],
            "subject": subject,
        },
    )
    tags = answer.get("tags")
    return "; ".join(f"{k}: {v.split(';')[0]}" for k, v in sorted(tags.items())) if tags else None


def flow_peer_to_hospital(lab: Lab) -> Flow:
    app = lab.mailbox("APP")["address"]
    subject = lab.marker("inbound")
    peer = lab.leaf("peer")
    answer = smtp(
        lab, "peer", server=lab.hospital["address"], port=lab.hospital["smtp_port"], starttls=True,
        cert=peer["cert"], key=peer["key"], mail=PEER_SENDER, rcpt=[app], subject=subject,
    )  # fmt: skip
    result = describe(answer)
    tags = wait_for(lambda: imap_tags(lab, subject)) if last_reply(answer)[0] == 250 else None
    if tags:
        result = f"delivered, fetched over IMAP with {tags}"
    return Flow(f"peer {peer['cn']} -> {app}", "delivered, tagged", result, tags is not None)


def _sent_line(lab: Lab, queue_id: str) -> str | None:
    log = lab.hospital_file(MSSANTE_LOG)
    text = log.read_text(errors="replace") if log.exists() else ""
    match = re.search(
        rf"{re.escape(queue_id)}: to=<[^>]+>, relay=(\S+?),.*status=(sent|bounced|deferred)", text
    )
    if not match or match.group(2) == "deferred":
        return None
    relay = match.group(1).split("[")[0]
    verified = re.search(rf"Verified TLS connection established to {re.escape(relay)}\[", text)
    return f"{match.group(2)} to {relay}" + (" (Verified TLS, CN matched)" if verified else "")


def flow_hospital_to_peer(lab: Lab) -> Flow:
    app = lab.mailbox("APP")
    answer = smtp(
        lab, "hospital", server=lab.hospital["address"], port=lab.hospital["submission_port"],
        starttls=True, cert=app["cert"], key=app["key"], mail=app["address"], rcpt=[PEER_SENDER],
        subject=lab.marker("outbound"),
    )  # fmt: skip
    code, text = last_reply(answer)
    queued = re.search(r"queued as (\S+)", text)
    line = wait_for(lambda: _sent_line(lab, queued.group(1))) if code == 250 and queued else None
    ok = bool(line and line.startswith("sent") and "Verified" in line)
    return Flow(
        f"{app['address']} -> {PEER_SENDER}", "sent over verified mutual TLS", line or describe(answer), ok
    )


def flow_hospital_to_internet(lab: Lab) -> Flow:
    app = lab.mailbox("APP")
    answer = smtp(
        lab, "hospital", server=lab.hospital["address"], port=lab.hospital["submission_port"],
        starttls=True, cert=app["cert"], key=app["key"], mail=app["address"], rcpt=[INTERNET_SENDER],
    )  # fmt: skip
    ok = refused(answer) and answer["steps"][-1][0] == "RCPT"
    return Flow(f"{app['address']} -> {INTERNET_SENDER}", "refused at RCPT", describe(answer), ok)


def flow_internet_to_mssante(lab: Lab, instance: str) -> Flow:
    rcpt = lab.mailbox("PER")["address"]
    server = lab.hospital["address"] if instance == "MSSante" else lab.hospital["ordinary_address"]
    answer = smtp(
        lab, "internet", server=server, port=25, starttls=True, mail=INTERNET_SENDER, rcpt=[rcpt],
        optional_tls=instance != "MSSante",
    )  # fmt: skip
    return Flow(f"internet -> {rcpt} ({instance} instance)", "refused", describe(answer), refused(answer))


def flow_internet_to_ordinary(lab: Lab) -> Flow:
    ordinary = lab.hospital.get("ordinary_mailboxes") or []
    rcpt = ordinary[0]["address"] if ordinary else f"postmaster@{lab.hospital['internet_domains'][0]}"
    answer = smtp(
        lab, "internet", server=lab.hospital["ordinary_address"], port=25, starttls=True,
        optional_tls=True, mail=INTERNET_SENDER, rcpt=[rcpt], subject=lab.marker("ordinary"),
    )  # fmt: skip
    ok = last_reply(answer)[0] == 250
    return Flow(f"internet -> {rcpt} (ordinary instance)", "accepted, as before", describe(answer), ok)


def flow_refused_peer(lab: Lab, leaf_name: str, label: str) -> Flow:
    leaf = lab.leaf(leaf_name)
    answer = smtp(
        lab, "peer", server=lab.hospital["address"], port=lab.hospital["smtp_port"], starttls=True,
        cert=leaf["cert"], key=leaf["key"], mail=PEER_SENDER, rcpt=[lab.mailbox("APP")["address"]],
    )  # fmt: skip
    return Flow(f"{label} -> hospital", "refused", describe(answer), refused(answer))


def flow_plaintext(lab: Lab) -> Flow:
    answer = smtp(
        lab, "peer", server=lab.hospital["address"], port=lab.hospital["smtp_port"], starttls=False,
        mail=PEER_SENDER, rcpt=[lab.mailbox("APP")["address"]],
    )  # fmt: skip
    return Flow(
        "peer without STARTTLS -> hospital", "refused, no downgrade", describe(answer), refused(answer)
    )


def journal_json(lab: Lab, *args: str) -> dict[str, Any]:
    """``mssante-journal ARGS --dir ... --public-key ...`` inside the hospital, as JSON."""
    argv = [JOURNAL, *args, "--dir", JOURNAL_DIR, "--public-key", JOURNAL_KEY]
    result = lab.run_in("hospital", argv)
    try:
        return dict(json.loads(result.stdout)) | {"exit": result.returncode}
    except ValueError:
        return {"ok": False, "exit": result.returncode, "problems": [result.stderr.strip()[-300:]]}


def verify_journal(lab: Lab) -> dict[str, Any]:
    """The hospital's journal verified with its public key, and its record counts by type."""
    verify = journal_json(lab, "verify", "--json")
    stats = journal_json(lab, "stats")
    ok = verify.get("exit") == 0 and bool(verify.get("ok"))
    line = (
        f"{verify.get('records')} records, {verify.get('checkpoints')} signed checkpoints"
        f" ({', '.join(verify.get('notes') or []) or 'all covered'})"
        if ok
        else f"FAILED: {'; '.join(str(p) for p in verify.get('problems') or [])}"
    )
    return {"ok": ok, "summary": line, "by_type": stats.get("by_type", {}), "verify": verify}


def read_metrics(lab: Lab) -> dict[str, str]:
    """Each metrics URL (reached inside the hospital): the number of mssante_* samples it serves."""
    pages: dict[str, str] = {}
    for name, url in sorted((lab.data.get("metrics_urls") or {}).items()):
        answer = lab.python_in("hospital", METRICS_PROBE, {"url": url})
        pages[name] = (
            f"{url} ({answer['samples']} mssante_* samples)"
            if "samples" in answer
            else f"{url} ({answer.get('error')})"
        )
    return pages


def run(lab: Lab) -> dict[str, Any]:
    flows = [
        flow_peer_to_hospital(lab),
        flow_hospital_to_peer(lab),
        flow_hospital_to_internet(lab),
        flow_internet_to_mssante(lab, "MSSante"),
        flow_internet_to_mssante(lab, "ordinary"),
        flow_internet_to_ordinary(lab),
        flow_refused_peer(lab, "impostor", "impostor (peer's CN, foreign CA)"),
        flow_refused_peer(lab, "expired", "expired certificate (listed CN)"),
        flow_plaintext(lab),
    ]
    journal = verify_journal(lab) | {"dir": lab.data.get("journal_dir")}
    metrics = read_metrics(lab)
    return {
        "ok": all(f.ok for f in flows) and journal["ok"],
        "flows": [asdict(f) for f in flows],
        "journal": journal,
        "metrics": metrics,
        "summary": summary(flows, journal, metrics),
    }


def summary(flows: Sequence[Flow], journal: dict[str, Any], metrics: dict[str, str]) -> list[str]:
    width = max(len(f.flow) for f in flows)
    expected = max(len(f.expected) for f in flows)
    lines = [f"{'flow':<{width}}  {'expected':<{expected}}  result"]
    for f in flows:
        mark = "ok  " if f.ok else "FAIL"
        lines.append(f"{f.flow:<{width}}  {f.expected:<{expected}}  {mark} {f.result}")
    counts = ", ".join(f"{kind} {n}" for kind, n in sorted(journal["by_type"].items()))
    lines.append(
        f"journal verify ({journal['dir']}): {'ok' if journal['ok'] else 'FAILED'}, {journal['summary']}"
    )
    lines.append(f"journal records by type: {counts}")
    lines += [f"metrics {name}: {where}" for name, where in metrics.items()]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m mssante.lab scenario", description=__doc__)
    parser.add_argument("--dir", type=Path, required=True, help="the lab's directory (holds lab.json)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    result = run(Lab(args.dir.resolve()))
    print(json.dumps(result, indent=2) if args.json else "\n".join(result["summary"]))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
