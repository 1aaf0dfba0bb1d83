# -*- test-case-name: tests.test_options -*-
"""
Option parsing shared by ``twistd orb-tracker`` and ``twistd orb-peer``:
conversions and checks that give a person one actionable line.
"""

import os
import re

from twisted.internet.endpoints import _parseServer
from twisted.python import usage

from orb.protocol import addresses

NETWORK_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}\Z")


def parse_hostport(text, what="address", allow_zero=False):
    """'127.0.0.1:7400' or '[::1]:7400' -> ('127.0.0.1', 7400); port 0 only with ``allow_zero`` (a listen address)."""
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", text or "")
    if not match:
        raise usage.UsageError(f"{what} {text!r} is not HOST:PORT (use [v6]:PORT for IPv6)")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not (0 if allow_zero else 1) <= port < 65536:
        raise usage.UsageError(f"{what} {text!r}: port must be {0 if allow_zero else 1}..65535")
    try:
        return addresses.check_ip(host), port
    except addresses.AddressError:
        raise usage.UsageError(f"{what} {text!r}: {host!r} is not an IP address") from None


_DNS_NAME = re.compile(r"(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?\Z")


def parse_name_port(text, what="address"):
    """'tracker.example.org:7400' -> ('tracker.example.org', 7400): a DNS name, as CA mode dials it."""
    name, colon, port = (text or "").rpartition(":")
    if not colon or not port.isdigit() or not 0 < int(port) < 65536:
        raise usage.UsageError(f"{what} {text!r} is not NAME:PORT with a port in 1..65535")
    if not _DNS_NAME.match(name) or name.replace(".", "").isdigit():
        raise usage.UsageError(f"{what} {text!r}: {name!r} is not a DNS name (CA mode verifies a name, not an IP)")
    return name.lower().rstrip("."), int(port)


def parse_node_id(text, what="node id"):
    """A node id as 64 lowercase hex digits (what ports.json and the REST API show) -> 32 bytes."""
    try:
        return addresses.node_id_from_hex(text or "")
    except addresses.AddressError:
        raise usage.UsageError(f"{what} {text!r} is not a node id (64 lowercase hex digits)") from None


def parse_join(text, what="--join"):
    """'NODEID@HOST:PORT' or 'HOST:PORT' -> (node id bytes or None, (host, port))."""
    node_id, at, hostport = (text or "").rpartition("@")
    if not at:
        return None, parse_hostport(text, what)
    return parse_node_id(node_id, f"{what} {text!r}:"), parse_hostport(hostport, what)


def check_endpoint(text, what):
    """A Twisted server endpoint string, checked for syntax without listening."""
    # The kind first: parsing an ssl: string already reads certificate files.
    if not text.startswith(("tcp:", "tcp6:", "unix:")):
        raise usage.UsageError(f"{what} {text!r}: only tcp:, tcp6: and unix: endpoints are supported")
    try:
        _parseServer(text, None)
    except (ValueError, KeyError, TypeError) as e:
        raise usage.UsageError(f"{what} {text!r} is not a valid endpoint string ({e})") from None
    return text


def listen_address(endpoint_text):
    """(interface, port) of a tcp:/tcp6: endpoint string, or None."""
    kind, args, kw = _parseServer(endpoint_text, None)
    if kind not in ("TCP", "TCP6"):
        return None
    default = "::" if endpoint_text.startswith("tcp6:") else "0.0.0.0"
    return kw.get("interface", default), int(args[0])


def check_data_dir(path):
    path = os.path.abspath(os.path.expanduser(path))
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as e:
        raise usage.UsageError(f"data dir {path}: cannot create it ({e.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise usage.UsageError(f"data dir {path} is not writable")
    probe = os.path.join(path, ".write-test")
    try:
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise usage.UsageError(f"data dir {path} is not writable ({e.strerror})") from None
    return path


def check_network(name):
    if not NETWORK_RE.match(name or ""):
        raise usage.UsageError(f"network name {name!r}: use 1-32 lowercase letters, digits and '-'")
    return name


def positive_int(name, value, maximum=100_000):
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise usage.UsageError(f"--{name} must be an integer, not {value!r}") from None
    if not 0 <= number <= maximum:
        raise usage.UsageError(f"--{name} must be between 0 and {maximum}")
    return number


_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}


def byte_rate(name, value, minimum=1):
    """``--NAME`` bytes a second: an integer with an optional K, M or G (binary) suffix."""
    text = str(value).strip().lower()
    unit = text[-1:] if text[-1:] in "kmg" and text[-1:] else ""
    digits = text[: len(text) - len(unit)]
    if not digits.isdigit() or len(digits) > 15:
        raise usage.UsageError(f"--{name} {value!r}: bytes a second, like 262144, 256K or 2M")
    rate = int(digits) * _UNITS[unit]
    if rate < minimum:
        raise usage.UsageError(f"--{name} {value!r}: at least {minimum} bytes a second")
    return rate


def eth_endpoint(options, needs_it=("escrow",)):
    """``--eth-rpc URL`` and ``--escrow ADDR`` checked: (url, checksummed escrow or None), or None when
    payments are off; each option of ``needs_it`` given without --eth-rpc is refused."""
    url = options.get("eth-rpc")
    if not url:
        for name in needs_it:
            if options.get(name) is not None:
                raise usage.UsageError(f"--{name} needs --eth-rpc URL")
        return None
    if not str(url).startswith(("http://", "https://")):
        raise usage.UsageError(f"--eth-rpc {url}: an http:// or https:// URL")
    escrow = options.get("escrow")
    if escrow is not None:
        from eth_utils import is_address, to_checksum_address

        if not is_address(escrow):
            raise usage.UsageError(f"--escrow {escrow}: not an Ethereum address")
        escrow = to_checksum_address(escrow)
    return url, escrow


def positive_float(name, value):
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise usage.UsageError(f"--{name} must be a number, not {value!r}") from None
    if not number > 0:
        raise usage.UsageError(f"--{name} must be positive")
    return number
