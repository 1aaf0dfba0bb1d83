# -*- test-case-name: tests.test_options -*-
"""
What the two twistd plugins share: the common options, their conversion
into a frozen NodeConfig, and the service wrapper that logs to JSON when
asked.
"""


from twisted.logger import LogLevel
from twisted.python import usage

from orb import _options as opt
from orb.net import logs
from orb.net.config import NodeConfig
from orb.protocol.session import SessionConfig


class NodeOptions(usage.Options):
    """Options both daemons take. Subclasses set the defaults."""

    default_data_dir = "~/.orb/node"
    default_listen = "tcp:7400:interface=127.0.0.1"
    default_max_inbound = 117  # Bitcoin's 125 - 8 outbound
    join_pins_ids = False  # whether --join/--tracker take NODEID@HOST:PORT

    optFlags = [
        ["public", None, "treat private address ranges (10/8, 172.16/12, 192.168/16) as unroutable in gossip"],
        ["debug", None, "also log ORB's debug lines (off by default: a remote can cause many)"],
    ]

    def __init__(self):
        super().__init__()
        self["join"] = []
        self["data-dir"] = self.default_data_dir
        self["listen"] = self.default_listen

    def opt_data_dir(self, path):
        """Where the node keeps its key, address book and state [default: ~/.orb/tracker or ~/.orb/peer]."""
        self["data-dir"] = path

    def opt_listen(self, endpoint):
        """Wire protocol listen endpoint, a Twisted endpoint string [default: tcp:7400:interface=127.0.0.1 for a tracker, tcp:7401:interface=127.0.0.1 for a peer]."""
        self["listen"] = endpoint

    def opt_network(self, name):
        """Network name; nodes of different networks never talk [default: main]."""
        self["network"] = name

    def opt_advertise(self, hostport):
        """Public HOST:PORT to advertise (default: the listen address, if specific)."""
        self["advertise"] = hostport

    def opt_max_inbound(self, value):
        """Most inbound sessions accepted [default: 117 for a peer, 2000 for a tracker]."""
        self["max-inbound"] = value

    def postOptions(self):
        """One line for the operator, no usage dump and no traceback."""
        try:
            self.check()
        except usage.UsageError as e:
            raise SystemExit(f"{self.command_name}: error: {e}") from None

    def check(self):
        self["data-dir"] = opt.check_data_dir(self["data-dir"])
        if self.get("no-listen"):
            self["listen"] = None  # a peer that accepts no connections (RFC 8.7): it is reached through RELAY
        else:
            self["listen"] = opt.check_endpoint(self["listen"], "--listen")
        self["network"] = opt.check_network(self.get("network", "main"))
        advertise = self.get("advertise")
        self["advertise"] = opt.parse_hostport(advertise, "--advertise") if advertise else None
        joins = [opt.parse_join(a, self.join_flag) if self.join_pins_ids else (None, opt.parse_hostport(a, self.join_flag))
                 for a in self["join"]]
        self["join"] = tuple(address for _, address in joins)
        self["pinned"] = tuple((address, node_id) for node_id, address in joins if node_id is not None)
        self["max-inbound"] = opt.positive_int("max-inbound", self.get("max-inbound", self.default_max_inbound), 10_000)
        address = opt.listen_address(self["listen"]) if self["listen"] is not None else None
        if address is not None:
            check_port_free(*address)

    def apply_log_level(self):
        """ORB's loggers emit debug lines only with --debug."""
        logs.set_level(LogLevel.debug if self["debug"] else LogLevel.info)

    def node_config(self, user_agent):
        return NodeConfig(
            data_dir=self["data-dir"],
            network=self["network"],
            listen=self["listen"],
            advertise=self["advertise"],
            bootstrap=self["join"],
            max_inbound=self["max-inbound"],
            user_agent=user_agent,
            allow_private=not self["public"],
            session=SessionConfig(network=self["network"]),
        )


def check_port_free(host, port):
    """A friendly early error for a port in use (the listen itself still decides)."""
    import socket

    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
    except OSError as e:
        raise usage.UsageError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    finally:
        s.close()

