"""Loaded by every Python process started with this folder on PYTHONPATH (tests/test_no_egress.py):
an audit hook that records each socket address the process connects or sends to, and each host name
it looks up, and refuses any that is not this machine's loopback. Records go to the file named by
ADAPTLAB_EGRESS_LOG, one JSON object per line."""

import ipaddress
import json
import os
import sys

LOG = os.environ.get("ADAPTLAB_EGRESS_LOG")
LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


def _local(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host is None or str(host).lower() in LOCAL_NAMES:
        return True
    try:
        addr = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return False
    return addr.is_loopback or addr.is_unspecified


def _write(rec: dict) -> None:
    with open(LOG, "a") as f:
        f.write(json.dumps(rec) + "\n")


def _hook(event, args):
    if event in ("socket.connect", "socket.sendto"):
        address = args[1]
        if not isinstance(address, tuple):  # a Unix socket path: stays on this machine
            return
        host = address[0]
    elif event == "socket.getaddrinfo" or event == "socket.gethostbyname":
        host = args[0]
    else:
        return
    ok = _local(host)
    _write({"event": event, "host": str(host), "local": ok, "pid": os.getpid()})
    if not ok:
        raise OSError(f"egress guard: {event} to {host!r} refused (only loopback is allowed in this test)")


if LOG:
    _write({"event": "guard", "pid": os.getpid(), "argv": sys.argv[:3]})
    sys.addaudithook(_hook)
