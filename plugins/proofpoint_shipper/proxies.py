"""The proxies of the machine: never asked for its own addresses, and checked before use.

httpx, botocore and websockets all take a proxy from the environment (HTTPS_PROXY and the like,
common on collector nodes), and none of them leaves loopback out on its own. A proxy elsewhere
can only reach its own loopback, so the local S3, the simulators and an S3-compatible store on
127.0.0.1 would fail with "cannot connect to proxy". `bypass_proxies_for_loopback` adds these
addresses to NO_PROXY, for this process and the commands it starts, keeping every entry there.

A proxy setting a client cannot use (a port that is no number, a scheme it does not speak, SOCKS
without its package) made each client fail its own way at the first request: a traceback, or a
retry as if the network were down. `check_proxy_settings` says so in one line before anything
goes out, showing the value without the proxy's credentials; `check_client_settings` adds the CA
bundle the TAP and PoD clients read, for the commands that use them.
"""

import importlib.util
import ipaddress
import os
import re
from collections.abc import Mapping, MutableMapping
from urllib.parse import urlsplit

from proofpoint_shipper.errors import ConfigError
from proofpoint_shipper.trust import check_ca_bundle

LOOPBACK = ("127.0.0.1", "localhost", "::1")  # not "[::1]": httpx cannot read that entry
_NAMES = ("no_proxy", "NO_PROXY")  # read in this order: the lower case wins, as in urllib


def bypass_proxies_for_loopback(environ: MutableMapping[str, str] = os.environ) -> None:
    current = next((environ[name] for name in _NAMES if name in environ), "")
    entries = [entry.strip() for entry in current.split(",") if entry.strip()]
    if "*" in entries:
        return  # no proxy for any host already
    entries += [host for host in LOOPBACK if host not in entries]
    for name in _NAMES:
        environ[name] = ",".join(entries)


# In either case, as the clients read them; wss_ and ws_proxy are websockets' own.
PROXY_VARIABLES = ("https_proxy", "http_proxy", "all_proxy", "wss_proxy", "ws_proxy")
SOCKS = ("socks4", "socks4a", "socks5", "socks5h")
SOCKS_PACKAGES = {"socksio": "socksio", "python_socks": "python-socks"}  # httpx's, websockets'


def check_client_settings(websocket: bool = False) -> None:
    """The proxy and CA settings the TAP API's HTTP client, or the PoD stream's websocket client,
    reads from the environment: a ConfigError before anything goes out when it cannot use them."""
    check_proxy_settings(scheme_required=websocket)
    if not websocket:
        check_http_client_no_proxy()
    check_ca_bundle()


def check_http_client_no_proxy(environ: Mapping[str, str] = os.environ) -> None:
    """A ConfigError for a NO_PROXY entry the HTTP client (httpx) cannot read.

    httpx turns each entry into a URL pattern, and one it cannot parse (an IPv6 network such as
    fd00::/8, an address in brackets, "host:port" with no number) raised from inside the client's
    constructor: a traceback before the first request. botocore and websockets read them.
    """
    import httpx  # the TAP client's library: imported by the commands that use it anyway

    value = next((environ[name] for name in _NAMES if name in environ), "")
    for entry in (item.strip() for item in value.split(",")):
        if not entry or entry == "*":
            continue
        try:
            httpx.URL(_httpx_pattern(entry))
        except httpx.InvalidURL as exc:
            raise ConfigError(
                f"NO_PROXY entry {entry!r} is one the TAP API's HTTP client (httpx) cannot read ({exc}): "
                "it takes host names, IPv4 addresses and networks, and IPv6 addresses without brackets; "
                "leave the entry out of NO_PROXY for this command"
            ) from None


def _httpx_pattern(entry: str) -> str:
    """The URL pattern httpx makes of a NO_PROXY entry (httpx._utils.get_environment_proxies)."""
    if "://" in entry:
        return entry
    try:
        ipaddress.IPv4Network(entry, strict=False)
        return f"all://{entry}"
    except ValueError:
        pass
    try:
        ipaddress.IPv6Address(entry.split("/")[0])
        return f"all://[{entry}]"
    except ValueError:
        pass
    return f"all://{entry}" if entry.lower() == "localhost" else f"all://*{entry}"


def check_proxy_settings(environ: Mapping[str, str] = os.environ, scheme_required: bool = False) -> None:
    """A ConfigError for the first proxy variable the HTTP, websocket or S3 client cannot use.

    scheme_required: for the websocket client, which reads "proxy:3128" as a URL of scheme
    "proxy" (httpx puts http:// in front).
    """
    for name, value in environ.items():
        if name.lower() in PROXY_VARIABLES and value:  # "" is unset to every client; " " is not
            fault = _fault(value.strip(), scheme_required)
            if fault is not None:
                raise ConfigError(f"proxy setting {name}={_shown(value.strip())} cannot be used: {fault}")


def _fault(value: str, scheme_required: bool) -> str | None:
    if not value:
        return "it is only white space, which the clients read as a proxy: unset it, or name one"
    if "://" not in value:
        if scheme_required:
            return f"write its scheme too, as in http://{_shown(value)}"
        value = f"http://{value}"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError for a port that is no number
    except ValueError as exc:
        return f"not a URL ({exc})"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", *SOCKS):
        return f"its scheme {scheme} is none of http, https, socks4, socks5"
    if not parts.hostname:
        return "it names no host"
    try:
        parts.hostname.encode("idna")
    except UnicodeError as exc:  # a label over 63 characters, say: the clients failed with a traceback
        return f"its host name is not valid ({_codec_reason(exc)})"
    if scheme not in SOCKS:
        return None
    missing = [shown for package, shown in SOCKS_PACKAGES.items() if not _installed(package)]
    return (
        f"a SOCKS proxy needs {' and '.join(missing)}: pip install python-socks socksio" if missing else None
    )


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _shown(value: str) -> str:
    """The setting without the user and password a proxy URL may hold: they never reach a log."""
    return re.sub(r"//[^/@]*@", "//***@", value)


def _codec_reason(exc: UnicodeError) -> str:
    """The idna codec's reason alone ("label too long"), whichever Python raised it: 3.11 wraps
    it in a cause, 3.13 in a UnicodeEncodeError that names positions."""
    inner = exc.__cause__ or exc
    return getattr(inner, "reason", None) or str(inner)
