# -*- test-case-name: tests.test_demo -*-
"""
The main job on the embedded default: a tracker and a peer on loopback,
with fresh keys in a throwaway data dir, complete a TLS 1.3 handshake,
exchange PING/PONG and GETADDR/ADDR, and the frames are printed as a
readable transcript.

    python -m orb.demo [--data-dir DIR] [--network NAME]
"""

import argparse
import os
import sys
import tempfile

from rich.console import Console
from twisted.internet import defer, endpoints, task
from twisted.internet.task import react

from orb.identity import NodeKey
from orb.protocol import messages as m
from orb.protocol.adapter import OrbFactory, SessionHandler
from orb.protocol.codes import Role
from orb.protocol.session import LocalIdentity, SessionConfig
from orb.tls import NodeTLS
from orb.transcript import Transcript, frame_line


class DemoTracker(SessionHandler):
    """Answers GETADDR with the addresses it knows: itself and its peers."""

    def __init__(self, clock, key, listen):
        self.clock = clock
        self.key = key
        self.listen = listen
        self.sessions = []

    def session_ready(self, protocol):
        self.sessions.append(protocol)

    def message_received(self, protocol, message, request_id):
        if isinstance(message, m.GetAddr):
            now = int(self.clock.seconds())
            entries = [m.AddrEntry(now, self.listen.host, self.listen.port, int(Role.TRACKER), self.key.node_id)]
            for s in self.sessions:
                remote = s.remote
                for ep in remote.listen:
                    entries.append(m.AddrEntry(now, ep.host, ep.port, remote.roles, remote.node_id))
            protocol.send(m.Addr(entries=entries), response_to=request_id)


class DemoPeer(SessionHandler):
    def __init__(self):
        self.ready = defer.Deferred()

    def session_ready(self, protocol):
        self.ready.callback(protocol)


@defer.inlineCallbacks
def run(reactor, data_dir, network, console):
    config = SessionConfig(network=network)
    tracker_key = NodeKey.load_or_create(os.path.join(data_dir, "tracker"))
    peer_key = NodeKey.load_or_create(os.path.join(data_dir, "peer"))
    names = {}

    def sink(label, direction, frame):
        arrow = "->" if direction == "tx" else "<-"
        who = names[label]
        console.print(f"[dim]{reactor.seconds() - started:7.3f}s[/] [bold]{who}[/] {arrow} {frame_line(frame)}",
                      highlight=False, soft_wrap=True)

    started = reactor.seconds()
    transcript = Transcript(config.magic, sink)

    def observer(label):
        return lambda protocol, direction, data: transcript.observe(label, direction, data)

    names["tracker"] = "tracker"
    names["peer"] = "peer   "

    tracker_handler = DemoTracker(reactor, tracker_key, m.Endpoint("127.0.0.1", 0))
    tracker_factory = OrbFactory(
        LocalIdentity(tracker_key.public_bytes, int(Role.TRACKER | Role.RELAY), user_agent="orb-tracker/0.1"),
        tracker_handler, reactor, initiator=False, config=config, observer=observer("tracker"),
    )
    port = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        NodeTLS(tracker_key).wrap(tracker_factory, is_client=False)
    )
    tracker_port = port.getHost().port
    tracker_handler.listen = m.Endpoint("127.0.0.1", tracker_port)
    console.print(f"[bold]tracker[/] {tracker_key.node_id.hex()[:16]} listening on 127.0.0.1:{tracker_port} "
                  f"(network {network}, magic {config.magic.hex()})")
    console.print(f"[bold]peer[/]    {peer_key.node_id.hex()[:16]} dialling it over TLS 1.3\n")

    peer_handler = DemoPeer()
    peer_factory = OrbFactory(
        LocalIdentity(peer_key.public_bytes, int(Role.PEER), listen=(m.Endpoint("127.0.0.1", 7401),),
                      user_agent="orb-peer/0.1"),
        peer_handler, reactor, initiator=True, config=config, observer=observer("peer"),
        expected_node_id=tracker_key.node_id,
    )
    protocol = yield endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", tracker_port, timeout=5).connect(
        NodeTLS(peer_key).wrap(peer_factory, is_client=True)
    )
    try:
        session = yield peer_handler.ready
        remote = session.remote
        tls_version = session.transport.getHandle().get_protocol_version_name()
        console.print(
            f"\n[green]handshake complete[/]: {tls_version}, certificate key bound to node id "
            f"{remote.node_id.hex()[:16]}, version {remote.version}, features 0x{remote.features:x}, "
            f"the tracker sees us at {remote.observed_us.host}:{remote.observed_us.port}\n"
        )
        session.ping()
        while session.rtt_ms is None:
            yield task.deferLater(reactor, 0.005, lambda: None)
        addr = yield session.request(m.GetAddr(), timeout_s=5)
        console.print(f"\n[green]RTT[/] {session.rtt_ms:.2f} ms; [green]ADDR[/] returned {len(addr.entries)} "
                      f"address(es): " + ", ".join(f"{e.host}:{e.port}" for e in addr.entries))
        session.close("demo finished")
        yield task.deferLater(reactor, 0.05, lambda: None)
    finally:
        protocol.transport.loseConnection()
        yield port.stopListening()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m orb.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="keep node keys here (default: a fresh temporary dir)")
    parser.add_argument("--network", default="devnet", help="network name (default: devnet)")
    args = parser.parse_args(argv)
    console = Console()

    def go(reactor):
        if args.data_dir:
            return run(reactor, args.data_dir, args.network, console)
        tmp = tempfile.TemporaryDirectory(prefix="orb-demo-")
        d = run(reactor, tmp.name, args.network, console)
        d.addBoth(lambda r: (tmp.cleanup(), r)[1])
        return d

    react(go)


if __name__ == "__main__":
    sys.exit(main())
