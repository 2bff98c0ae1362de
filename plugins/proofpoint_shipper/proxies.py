"""This machine's own addresses are never asked of a proxy.

httpx, botocore and websockets all take a proxy from the environment (HTTPS_PROXY and the like,
common on collector nodes), and none of them leaves loopback out on its own. A proxy elsewhere
can only reach its own loopback, so the local S3, the simulators and an S3-compatible store on
127.0.0.1 would fail with "cannot connect to proxy". `bypass_proxies_for_loopback` adds these
addresses to NO_PROXY, for this process and the commands it starts, keeping every entry there.
"""

import os
from collections.abc import MutableMapping

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
