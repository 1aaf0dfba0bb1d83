# -*- test-case-name: tests.test_demo -*-
"""
The main job on the embedded default, in two acts, with fresh keys in a
throwaway data dir and everything on loopback:

1. the wire: a tracker and a peer complete a TLS 1.3 handshake, exchange
   PING/PONG and GETADDR/ADDR, and every frame is printed as a readable
   transcript;
2. a devnet: two ``twistd orb-tracker`` and three ``twistd orb-peer``
   daemons start, federate and discover each other, and the registry is
   read back from the trackers' REST API. Every daemon is stopped at the
   end;
3. the jail: a function runs in the executor every peer uses (seccomp,
   Landlock, rlimits, namespaces, zygote warm starts), and so does one
   that tries to open a socket.

    python -m orb.demo [--data-dir DIR] [--network NAME] [--peers N]
"""

import argparse
import os
import sys
import tempfile

from rich.console import Console
from twisted.internet import defer, endpoints, task
from twisted.internet.task import react

from rich.table import Table

from orb.devnet import Devnet, eventually
from orb.identity import NodeKey
from orb.protocol import messages as m
from orb.net.adapter import OrbFactory, SessionHandler
from orb.protocol.codes import Role
from orb.protocol.session import LocalIdentity, SessionConfig
from orb.net.tls import NodeTLS
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


@defer.inlineCallbacks
def run_devnet(reactor, base_dir, network, peer_count, console):
    console.rule("[bold]a local devnet of real daemons")
    net = Devnet(base_dir, network=network)
    started = reactor.seconds()
    try:
        t1, t2 = yield net.start_trackers("tracker-1", "tracker-2")
        trackers = (t1, t2)
        for t in trackers:
            console.print(f"[bold]{t.data_dir.rsplit('/', 1)[-1]}[/] {t.node_id[:16]}  wire {t.wire_text}  "
                          f"http://127.0.0.1:{t.info['http']}/", highlight=False)
        peers = []
        for i in range(peer_count):
            home = trackers[i % 2]
            peer = yield net.start_peer(f"peer-{i + 1}", "--tracker", home.wire_text, "--outbound-peers", "4")
            peers.append(peer)
            console.print(f"[bold]peer-{i + 1}[/]    {peer.node_id[:16]}  wire {peer.wire_text}  joins via "
                          f"{home.wire_text}", highlight=False)
        expected = {p.node_id for p in peers}

        @defer.inlineCallbacks
        def converged():
            views = []
            for t in trackers:
                code, listing = yield t.get_json("/api/v1/peers")
                if {p["node_id"] for p in listing["peers"]} != expected:
                    return None
                if any(p["reachability"] != "reachable" or p["rtt_ms"] is None for p in listing["peers"]):
                    return None
                views.append(listing)
            return views

        views = yield eventually(converged, timeout_s=45, what="both trackers know every peer")
        console.print(f"\n[green]converged[/] in {reactor.seconds() - started:.1f} s: both trackers list all "
                      f"{peer_count} peers (federation), each dialled back as reachable\n")
        names = {t.node_id: n for n, t in (("tracker-1", t1), ("tracker-2", t2))}
        names.update({p.node_id: f"peer-{i + 1}" for i, p in enumerate(peers)})
        table = Table(title="registry at tracker-2 (GET /api/v1/peers)")
        for column in ("peer", "node id", "home tracker", "reachability", "address", "rtt ms"):
            table.add_column(column, no_wrap=True)
        for p in sorted(views[1]["peers"], key=lambda p: names[p["node_id"]]):
            address = ", ".join(f"{a['ip']}:{a['port']}" for a in p["addresses"])
            rtt = "-" if p["rtt_ms"] is None else f"{p['rtt_ms']:.2f}"
            table.add_row(names[p["node_id"]], p["node_id"][:8], names.get(p["home"], p["home"][:16]),
                          p["reachability"], address, rtt)
        console.print(table)
        code, stats = yield t1.get_json("/api/v1/stats")
        received = sum(stats["messages"]["in"].values())
        sent = sum(stats["messages"]["out"].values())
        console.print(f"tracker-1 counted {received} frames in and {sent} out so far.")
    finally:
        yield net.stop_all()
        console.print("\nall daemons stopped (SIGTERM; state saved in their data dirs)")


DEMO_FUNCTION = b"""\
import json


def handler(event, context):
    numbers = json.loads(event)
    return {"sum": sum(numbers), "request": context.request_id}
"""

HOSTILE_FUNCTION = b"""\
import socket


def handler(event, context):
    socket.create_connection(("127.0.0.1", 7400))
    return "escaped"
"""


@defer.inlineCallbacks
def run_jail(reactor, base_dir, console):
    from orb.exec import ExecConfig, Executor, RuntimeSpec

    console.rule("[bold]the jail: functions run as strangers' code")
    packages = {}
    for name, source in (("adder", DEMO_FUNCTION), ("escaper", HOSTILE_FUNCTION)):
        package = os.path.join(base_dir, name)
        os.makedirs(package, exist_ok=True)
        with open(os.path.join(package, "main.py"), "wb") as f:
            f.write(source)
        packages[name] = package
    executor = Executor(reactor, ExecConfig(max_concurrent=2))
    try:
        layers = yield executor.start()
        present = ", ".join(sorted(k for k, v in layers.get("layers", layers).items() if v is True))
        console.print(f"layers on this kernel: {present}", highlight=False)
        spec = RuntimeSpec(runtime="python", entry="main.py", reuse="per-call")
        for i in range(3):
            result = yield executor.invoke("adder", packages["adder"], spec, b"[2, 3, %d]" % i, deadline_s=5.0,
                                           request_id=f"call-{i}")
            console.print(f"adder   {result.status.name} {result.output.decode()}  boot {result.boot_ms:.1f} ms, "
                          f"exec {result.exec_ms:.1f} ms", highlight=False)
        result = yield executor.invoke("escaper", packages["escaper"], spec, b"", deadline_s=5.0,
                                       request_id="hostile")
        console.print(f"escaper {result.status.name}: {result.message}", highlight=False)
    finally:
        yield executor.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m orb.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="keep node keys here (default: a fresh temporary dir)")
    parser.add_argument("--network", default="devnet", help="network name (default: devnet)")
    parser.add_argument("--peers", type=int, default=3, choices=range(1, 21), metavar="N",
                        help="peers in the devnet (1-20, default 3)")
    args = parser.parse_args(argv)
    console = Console()

    @defer.inlineCallbacks
    def both(reactor, base_dir):
        console.rule("[bold]the wire: one TLS session, frame by frame")
        yield run(reactor, os.path.join(base_dir, "wire"), args.network, console)
        yield run_devnet(reactor, os.path.join(base_dir, "devnet"), args.network, args.peers, console)
        yield run_jail(reactor, os.path.join(base_dir, "jail"), console)

    def go(reactor):
        if args.data_dir:
            return both(reactor, os.path.abspath(args.data_dir))
        tmp = tempfile.TemporaryDirectory(prefix="orb-demo-")
        d = both(reactor, tmp.name)
        d.addBoth(lambda r: (tmp.cleanup(), r)[1])
        return d

    react(go)


if __name__ == "__main__":
    sys.exit(main())
