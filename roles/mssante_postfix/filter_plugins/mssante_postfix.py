"""Filters of the mssante_postfix role: the milter's declared settings as main.cf entries, and
`postconf` output as a dictionary."""

from __future__ import annotations

import re


def milter_main(settings, endpoint):
    """main.cf entries ({name, value}) from the milter's postfix_settings.yml data."""
    entries = [
        {"name": k, "value": "" if v is None else str(v)} for k, v in settings.get("parameters", {}).items()
    ]
    for name, macros in settings.get("macros", {}).items():
        value = " ".join(macros) if isinstance(macros, list) else str(macros)
        entries.append({"name": name, "value": value})
    options = [f"{k}={v}" for k, v in settings.get("smtpd_milter", {}).items()]
    entries.append({"name": "smtpd_milters", "value": "{ " + ", ".join([endpoint, *options]) + " }"})
    return entries


def postconf_dict(lines):
    """`postconf` output lines ("name = value") as a dict."""
    result = {}
    for line in lines:
        match = re.match(r"^(\S+) =\s?(.*)$", line)
        if match:
            result[match.group(1)] = match.group(2)
    return result


class FilterModule:
    """Filters of the mssante_postfix role."""

    def filters(self):
        return {"mssante_postfix_milter_main": milter_main, "mssante_postfix_postconf_dict": postconf_dict}
