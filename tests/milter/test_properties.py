"""Property tests of the parsers under the policy (style.md: hypothesis for parsers)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mssante.mailboxes import address_key, normalize_domain, split_address
from mssante.milter.message import BodyScan
from mssante.milter.tagging import is_own, removals

LABEL = st.from_regex(r"[a-z0-9]{1,8}(-[a-z0-9]{1,8})?", fullmatch=True)
SLOW_OK = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)  # a loaded CI machine
DOMAIN = st.lists(LABEL, min_size=2, max_size=4).map(".".join)
LOCAL_PART = st.from_regex(r"[A-Za-z0-9._+-]{1,20}", fullmatch=True)


@SLOW_OK
@given(LOCAL_PART, DOMAIN)
def test_auth3_address_key_is_stable_and_case_folds_only_the_domain(local: str, domain: str) -> None:
    key = address_key(f"{local}@{domain.upper()}")
    assert key == f"{local}@{domain}"
    assert address_key(f"<{key}>") == key
    assert split_address(key or "") == (local, domain)


@SLOW_OK
@given(DOMAIN)
def test_normalize_domain_idempotent(domain: str) -> None:
    once = normalize_domain(domain)
    assert once is None or normalize_domain(once) == once


@SLOW_OK
@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")), min_size=1),
       st.lists(st.integers(min_value=1, max_value=17), min_size=1))  # fmt: skip
def test_body_scan_longest_line_whatever_the_chunking(lines: list[bytes], cuts: list[int]) -> None:
    body = b"".join(line + b"\r\n" for line in lines)
    scan, start, i = BodyScan(), 0, 0
    while start < len(body):
        end = start + cuts[i % len(cuts)]
        scan.feed(body[start:end])
        start, i = end, i + 1
    assert scan.longest == max(len(line) for line in lines)
    assert scan.size == len(body)


@given(
    st.lists(st.sampled_from(["X-MSSante-Trace", "x-mssante-verdict", "X-MSS-NIL", "Subject", "X-MSS-INS"]))
)
def test_msg4_removals_cover_exactly_our_headers_last_first(names: list[str]) -> None:
    headers = [(name, "v") for name in names]
    removed = removals(headers)
    assert len(removed) == sum(1 for n in names if is_own(n))
    assert all(is_own(name) and not name.upper().startswith("X-MSS-") for name, _ in removed)
    for name in {n.lower() for n, _ in removed}:
        indexes = [idx for n, idx in removed if n.lower() == name]
        assert indexes == sorted(indexes, reverse=True) and indexes[-1] == 1
