"""Loopback is left out of any proxy, beside what NO_PROXY already named (the demo test runs
the real command behind a proxy that nothing answers at)."""

import urllib.request

import httpx

from proofpoint_shipper.proxies import LOOPBACK, bypass_proxies_for_loopback

PROXY = "http://proxy.corp.example:3128"


def bypassed(environ: dict[str, str]) -> dict[str, str]:
    bypass_proxies_for_loopback(environ)
    return environ


def test_loopback_is_added_to_both_spellings():
    environ = bypassed({"HTTPS_PROXY": PROXY})
    assert environ["NO_PROXY"] == environ["no_proxy"] == ",".join(LOOPBACK)
    assert environ["HTTPS_PROXY"] == PROXY


def test_the_entries_already_named_are_kept_first_and_once():
    environ = bypassed({"NO_PROXY": " .corp.example, 10.0.0.0/8 ,localhost,"})
    assert environ["NO_PROXY"] == ".corp.example,10.0.0.0/8,localhost,127.0.0.1,::1"
    assert bypassed(dict(environ)) == environ  # twice changes nothing more


def test_the_lower_case_spelling_wins_as_in_urllib():
    environ = bypassed({"no_proxy": "a.example", "NO_PROXY": "b.example"})
    assert environ["NO_PROXY"] == environ["no_proxy"] == "a.example,127.0.0.1,localhost,::1"


def test_a_wildcard_is_left_as_it_is():
    assert bypassed({"NO_PROXY": "*"}) == {"NO_PROXY": "*"}


def test_the_clients_read_it_as_no_proxy_for_loopback(monkeypatch):
    """urllib's rule, which botocore and websockets apply (the demo test runs all three clients)."""
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", PROXY)
    monkeypatch.setenv("HTTP_PROXY", PROXY)
    assert not urllib.request.proxy_bypass("127.0.0.1:9000")
    bypass_proxies_for_loopback()
    assert urllib.request.proxy_bypass("127.0.0.1:9000") and urllib.request.proxy_bypass("localhost")
    assert not urllib.request.proxy_bypass("s3.amazonaws.com")
    httpx.Client().close()  # httpx reads every NO_PROXY entry when a client is made, and refuses some
