"""Loopback is left out of any proxy, beside what NO_PROXY already named (the demo test runs
the real command behind a proxy that nothing answers at)."""

import urllib.request

import httpx
import pytest

from proofpoint_shipper import proxies
from proofpoint_shipper.errors import ConfigError
from proofpoint_shipper.proxies import LOOPBACK, bypass_proxies_for_loopback, check_proxy_settings
from tests.conftest import one_error_line, run_ppship

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


@pytest.mark.parametrize(
    "value, fault",
    [
        ("http://proxy.corp:notaport", "cannot be used: not a URL (Port could not be cast to integer"),
        ("http://[proxy", "cannot be used: not a URL (Invalid IPv6 URL)"),
        ("ftp://proxy.corp:21", "cannot be used: its scheme ftp is none of http, https, socks4, socks5"),
        ("http://:3128", "cannot be used: it names no host"),
    ],
)
def test_a_proxy_setting_no_client_can_use_is_a_config_error(value, fault):
    with pytest.raises(ConfigError) as caught:
        check_proxy_settings({"HTTPS_PROXY": value})
    assert f"proxy setting HTTPS_PROXY={value} {fault}" in str(caught.value)


def test_the_websocket_clients_own_variables_are_checked_too():
    with pytest.raises(ConfigError, match=r"proxy setting WSS_PROXY=ftp://proxy\.corp:21 cannot be used"):
        check_proxy_settings({"WSS_PROXY": "ftp://proxy.corp:21"}, scheme_required=True)


def test_a_proxy_setting_names_no_credentials():
    with pytest.raises(ConfigError) as caught:
        check_proxy_settings({"all_proxy": "http://ops:s3cret@proxy.corp:bad"})
    assert "all_proxy=http://***@proxy.corp:bad" in str(caught.value) and "s3cret" not in str(caught.value)


def test_a_socks_proxy_needs_its_packages(monkeypatch):
    monkeypatch.setattr(proxies, "_installed", lambda package: package != "python_socks")
    with pytest.raises(ConfigError) as caught:
        check_proxy_settings({"ALL_PROXY": "socks5://127.0.0.1:1080"})
    assert str(caught.value).endswith("a SOCKS proxy needs python-socks: pip install python-socks socksio")
    monkeypatch.setattr(proxies, "_installed", lambda package: True)
    check_proxy_settings({"ALL_PROXY": "socks5://127.0.0.1:1080"})


@pytest.mark.parametrize(
    "value", ["http://proxy.corp:3128", "https://[2001:db8::1]:443", "proxy.corp:3128", ""]
)
def test_proxy_settings_the_clients_take_pass(value):
    check_proxy_settings({"HTTPS_PROXY": value, "PATH": "/usr/bin", "NO_PROXY": "::1"})


def test_the_websocket_client_needs_the_scheme():
    """websockets reads "proxy.corp:3128" as a URL of scheme "proxy.corp"; httpx adds http://."""
    with pytest.raises(ConfigError) as caught:
        check_proxy_settings({"https_proxy": "proxy.corp:3128"}, scheme_required=True)
    assert "write its scheme too, as in http://proxy.corp:3128" in str(caught.value)


def test_collectors_stop_on_a_proxy_setting_they_cannot_use(tmp_path):
    """Before, `tap fetch` and `pod stream` ended in a traceback (httpx.InvalidURL, ValueError)."""
    environment = {
        "HTTPS_PROXY": "http://proxy.corp:notaport",
        "TAP_PRINCIPAL": "p",
        "TAP_SECRET": "s",
        "POD_TOKEN": "t",
        "POD_CLUSTER_ID": "c",
    }
    commands = (
        ["tap", "fetch", "--cursor", str(tmp_path / "tap.json")],
        ["pod", "stream", "--type", "message", "--cursor", str(tmp_path / "pod.json")],
    )
    for command in commands:
        result = run_ppship(*command, env=environment)
        assert one_error_line(result).startswith(
            "ppship: error: proxy setting HTTPS_PROXY=http://proxy.corp:notaport cannot be used"
        )


@pytest.mark.parametrize(
    "value, fault",
    [
        (" ", "it is only white space, which the clients read as a proxy"),
        (f"http://{'x' * 64}.corp:3128", "its host name is not valid (label"),
    ],
    ids=["white space", "a label over 63 characters"],
)
def test_a_proxy_the_clients_would_fail_on_inside_is_refused(value, fault):
    # Before: websockets' InvalidProxy, and the idna codec's UnicodeError, as tracebacks.
    with pytest.raises(ConfigError) as caught:
        check_proxy_settings({"HTTPS_PROXY": value})
    assert fault in str(caught.value)


HTTPX_UNREADABLE = ["fd00::/8", "[::1]", "[::1]:80", "::::", "host:abc", "http://[::1"]
HTTPX_READABLE = [
    "example.com",
    ".corp.example",
    "*.corp",
    "10.0.0.0/8",
    "::1",
    "localhost:8080",
    "1.2.3.4:80",
]


@pytest.mark.parametrize("entry", HTTPX_UNREADABLE)
def test_a_no_proxy_entry_httpx_cannot_read_is_named(entry, monkeypatch):
    # httpx itself fails on it, inside its constructor: the check holds it to the real client
    for name in ("NO_PROXY", "no_proxy"):  # the lower case wins, and the suite sets it
        monkeypatch.setenv(name, f"example.com,{entry}")
    monkeypatch.setenv("HTTPS_PROXY", PROXY)
    with pytest.raises(httpx.InvalidURL):
        httpx.Client()
    with pytest.raises(ConfigError) as caught:
        proxies.check_http_client_no_proxy({"NO_PROXY": f"example.com,{entry}"})
    assert str(caught.value).startswith(f"NO_PROXY entry {entry!r} is one the TAP API's HTTP client")


@pytest.mark.parametrize("entry", HTTPX_READABLE)
def test_the_no_proxy_entries_httpx_reads_pass(entry, monkeypatch):
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, entry)
    monkeypatch.setenv("HTTPS_PROXY", PROXY)
    httpx.Client().close()
    proxies.check_http_client_no_proxy({"no_proxy": entry})


def test_tap_fetch_names_a_no_proxy_entry_it_cannot_read(tmp_path):
    no_proxy = "10.0.0.0/8,fd00::/8"
    environment = {"NO_PROXY": no_proxy, "no_proxy": no_proxy, "TAP_PRINCIPAL": "p", "TAP_SECRET": "s"}
    result = run_ppship("tap", "fetch", "--once", "--cursor", str(tmp_path / "tap.json"), env=environment)
    assert one_error_line(result).startswith("ppship: error: NO_PROXY entry 'fd00::/8' is one the TAP API's")
