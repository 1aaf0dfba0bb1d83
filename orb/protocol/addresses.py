# -*- test-case-name: tests.test_registry -*-
"""
One definition of a valid node address: node id, IP address, port.

Pure functions, no I/O.  Every check raises ``AddressError`` (a
``ValueError``) with a message naming what is wrong, and returns the value
in its one canonical form:

* a node id is ``NODE_ID_BYTES`` raw bytes, or that many bytes as 64
  lowercase hex digits in text (logs, APIs, registry JSON);
* an IP address is IPv4 in dotted-quad form or IPv6 in RFC 5952 form
  (lowercase, longest zero run compressed).  IPv4-mapped IPv6 addresses
  are written as plain IPv4, as the codec's ``ip_from_wire`` does, and
  zone ids (``fe80::1%eth0``) are refused: they mean nothing to a remote;
* a listening port is 1..65535 (0 is "no port", never a place to dial).
"""

import functools
import ipaddress
import re

from orb.protocol import limits

NODE_ID_BYTES = limits.NODE_ID_BYTES
MAX_IP_TEXT_CHARS = 45  # the longest IPv6 text form
_HEX_ID_RE = re.compile(r"[0-9a-f]{%d}\Z" % (2 * NODE_ID_BYTES))


class AddressError(ValueError):
    """A node id, IP address or port is not valid."""


def check_node_id(value, what="node id"):
    """``value`` if it is ``NODE_ID_BYTES`` raw bytes."""
    if not isinstance(value, bytes) or len(value) != NODE_ID_BYTES:
        raise AddressError(f"{what} must be {NODE_ID_BYTES} bytes")
    return value


def node_id_from_hex(text, what="node id"):
    """The raw node id written as 64 lowercase hex digits in ``text``."""
    if not isinstance(text, str) or not _HEX_ID_RE.match(text):
        raise AddressError(f"{what}: expected {2 * NODE_ID_BYTES} lowercase hex digits")
    return bytes.fromhex(text)


def check_ip(value, what="address"):
    """The canonical text of the IP address ``value`` (see the module docstring)."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_IP_TEXT_CHARS or "%" in value:
        raise AddressError(f"{what}: expected an IPv4 or IPv6 address")
    canonical = _canonical_ip(str(value))
    if canonical is None:
        raise AddressError(f"{what}: expected an IPv4 or IPv6 address")
    return canonical


@functools.lru_cache(maxsize=1024)
def _canonical_ip(value):
    """
    check_ip's parse, once per distinct text: every Endpoint and AddrEntry is
    checked when built, a handshake builds several (HELLO, HELLO_ACK, the
    transport's address, the ADDR a tracker sends), and they name the same few
    addresses over and over; ipaddress's parser was a tenth of a tracker's CPU
    per handshake. None for text that is not an address.
    """
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.compressed


def is_canonical_ip(value):
    """True if ``value`` is a valid IP address already in canonical form."""
    try:
        return check_ip(value) == value
    except AddressError:
        return False


def check_port(value, what="port"):
    """``value`` if it is a port one can connect to (1..65535)."""
    if type(value) is not int or not 1 <= value <= 0xFFFF:
        raise AddressError(f"{what}: expected a port number 1..65535")
    return value


def check_endpoint(host, port, what="endpoint"):
    """``(canonical ip, port)`` for a listening address."""
    return check_ip(host, f"{what} ip"), check_port(port, f"{what} port")
