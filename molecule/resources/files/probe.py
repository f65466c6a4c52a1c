"""SMTP/TLS probe used by verify.yml: prints one JSON object describing what a client sees."""

import json
import smtplib
import ssl
import sys


def main() -> None:
    args = json.loads(sys.argv[1])
    seen = {}
    try:
        with smtplib.SMTP(args["host"], args["port"], timeout=20) as client:
            client.ehlo("probe.test")
            seen["before_tls_mail"] = client.docmd("MAIL FROM:<probe@%s>" % args["peer"])[0]
            client.rset()
            context = ssl.create_default_context(cafile=args["cafile"])
            context.check_hostname = False
            if args.get("max_tls"):
                context.maximum_version = getattr(ssl.TLSVersion, args["max_tls"])
                context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
                context.set_ciphers("ALL:@SECLEVEL=0")
            client.starttls(context=context)
            seen["tls"] = client.sock.version()
            der = client.sock.getpeercert(binary_form=True)
            if args.get("cert"):
                with open(args["cert"], encoding="ascii") as handle:
                    pem = handle.read()
                first = pem[: pem.index("-----END CERTIFICATE-----") + 25]
                seen["presents_cert"] = ssl.PEM_cert_to_DER_cert(first) == der
            client.ehlo("probe.test")
            seen["mail"] = list(client.docmd("MAIL FROM:<probe@%s>" % args["peer"]))
            seen["mail"][1] = seen["mail"][1].decode()
    except (OSError, smtplib.SMTPException) as exc:
        seen["error"] = type(exc).__name__
    print(json.dumps(seen))


main()
