# -*- test-case-name: tests.test_options -*-
"""What both daemons are configured with, once converted from the options."""

import attrs

from orb.protocol.session import SessionConfig


@attrs.frozen
class NodeConfig:
    data_dir: str
    network: str = "main"
    listen: str | None = "tcp:7400:interface=127.0.0.1"  # None: accept no connections (a peer's --no-listen)
    advertise: tuple | None = None  # (host, port) others should dial, or None
    bootstrap: tuple = ()  # ((host, port), ...) trackers to join
    max_inbound: int = 117
    user_agent: str = "orb/0.1"
    allow_loopback: bool = True  # accept 127/8 and ::1 in the address book
    allow_private: bool = True
    session: SessionConfig = SessionConfig()
    tls_cert: str | None = None  # PEM: a CA-issued certificate for our node key, then its chain (CA mode)
    ca_file: str | None = None  # PEM trust anchors for dials to a DNS name (CA mode)
