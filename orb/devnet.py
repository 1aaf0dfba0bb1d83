# -*- test-case-name: tests.test_network -*-
"""
A local devnet of real ``twistd -n orb-tracker`` / ``orb-peer`` processes:
start them on ephemeral loopback ports, wait for their ports.json, query
the tracker's HTTP API, stop them with SIGTERM (or SIGKILL). Used by the
demo and by the integration tests, which stop every process they start.
"""

import json
import os
import signal
import sys

from twisted.internet import defer, endpoints, protocol, reactor, task
from twisted.web.client import Agent, readBody

from orb.identity import NodeKey
from orb.net.adapter import OrbFactory, SessionHandler
from orb.net.tls import NodeTLS
from orb.protocol.codes import Role
from orb.protocol.messages import Endpoint
from orb.protocol.session import LocalIdentity, SessionConfig

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
STARTUP_TIMEOUT_S = 30.0


class DaemonExited(Exception):
    pass


class Daemon(protocol.ProcessProtocol):
    def __init__(self, kind, data_dir, args, network="itest"):
        self.kind = kind
        self.data_dir = data_dir
        self.args = list(args)
        self.network = network
        self.output = bytearray()
        self.exited = defer.Deferred()
        self.exit_code = None
        self.exit_signal = None
        self.running = False
        self.info = None
        self.tracebacks = 0  # "Traceback" lines in all output, including what the bounded buffer dropped
        self._tail = b""

    # --- process ---------------------------------------------------------------------

    def start(self):
        os.makedirs(self.data_dir, exist_ok=True)
        ports = os.path.join(self.data_dir, "ports.json")
        if os.path.exists(ports):
            os.remove(ports)
        argv = [TWISTD, "-n", "--pidfile=", self.kind, "--data-dir", self.data_dir,
                "--network", self.network] + self.args
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.exited = defer.Deferred()
        self.running = True
        self.transport = reactor.spawnProcess(self, TWISTD, argv, env=env, path=os.getcwd())
        return self.wait_ready()

    @defer.inlineCallbacks
    def wait_ready(self):
        path = os.path.join(self.data_dir, "ports.json")
        waited = 0.0
        while not os.path.exists(path):
            if not self.running:
                raise DaemonExited(f"{self.kind} exited with {self.exit_code}:\n{self.text[-3000:]}")
            if waited > STARTUP_TIMEOUT_S:
                raise DaemonExited(f"{self.kind} did not start:\n{self.text[-3000:]}")
            yield sleep(0.1)
            waited += 0.1
        with open(path) as f:
            self.info = json.load(f)
        return self

    def outReceived(self, data):
        window = self._tail + data
        self.tracebacks += window.count(b"Traceback")
        self._tail = data[-8:] if not data.endswith(b"Traceback") else b""
        self.output += data[-100_000:]
        del self.output[:-200_000]

    errReceived = outReceived

    def processEnded(self, reason):
        self.running = False
        self.exit_code = reason.value.exitCode
        self.exit_signal = reason.value.signal
        self.exited.callback(self.exit_code)

    @property
    def text(self):
        return self.output.decode("utf-8", "replace")

    def stop(self, sig=signal.SIGTERM, timeout_s=20.0):
        if not self.running:
            return defer.succeed(self.exit_code)
        self.transport.signalProcess(sig)
        timer = reactor.callLater(timeout_s, self._kill)
        d = self.exited
        d.addBoth(lambda r: (timer.active() and timer.cancel(), r)[1])
        return d

    def _kill(self):
        if self.running:
            self.transport.signalProcess("KILL")

    # --- what it exposes ------------------------------------------------------------------

    @property
    def wire(self):
        return ("127.0.0.1", self.info["wire"])

    @property
    def wire_text(self):
        return f"127.0.0.1:{self.info['wire']}"

    @property
    def node_id(self):
        return self.info["node_id"]

    def status(self):
        with open(os.path.join(self.data_dir, "status.json")) as f:
            return json.load(f)

    @defer.inlineCallbacks
    def get_json(self, path):
        agent = Agent(reactor)
        response = yield agent.request(b"GET", f"http://127.0.0.1:{self.info['http']}{path}".encode())
        body = yield readBody(response)
        return response.code, json.loads(body)


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def eventually(check, timeout_s=30.0, interval_s=0.25, what="condition"):
    """Call ``check`` (which may return a Deferred) until it returns a true value."""
    waited = 0.0
    last = None
    while waited <= timeout_s:
        try:
            last = yield defer.maybeDeferred(check)
        except (OSError, ValueError, KeyError) as e:  # files not written yet, daemon busy
            last = e
        if last and not isinstance(last, Exception):
            return last
        yield sleep(interval_s)
        waited += interval_s
    raise AssertionError(f"{what} not reached in {timeout_s:g} s (last: {last!r})")


class Devnet:
    """Daemons started in one base dir; ``stop_all`` stops every one of them."""

    def __init__(self, base_dir, network="devnet"):
        self.base_dir = base_dir
        self.network = network
        self.daemons = []
        self.peer_args = ()  # given to every peer start_peer starts (e.g. the chain's payment options)

    def daemon(self, kind, name, *args):
        daemon = Daemon(kind, os.path.join(self.base_dir, name), args, network=self.network)
        self.daemons.append(daemon)
        return daemon

    @defer.inlineCallbacks
    def start_tracker(self, name, *args):
        daemon = self.daemon(
            "orb-tracker", name, "--listen", "tcp:0:interface=127.0.0.1", "--http", "tcp:0:interface=127.0.0.1",
            *args,
        )
        yield daemon.start()
        return daemon

    def node_id_of(self, name):
        """A daemon's node id before it starts: its key is made now, in its data dir."""
        return NodeKey.load_or_create(os.path.join(self.base_dir, name)).node_id.hex()

    @defer.inlineCallbacks
    def start_trackers(self, *names, args=()):
        """Trackers that federate: the first admits the others (--admit), which join it by node id.
        ``args`` go to every one of them."""
        admits = [arg for name in names[1:] for arg in ("--admit", self.node_id_of(name))]
        first = yield self.start_tracker(names[0], *admits, *args)
        started = [first]
        for name in names[1:]:
            started.append((yield self.start_tracker(name, "--join", f"{first.node_id}@{first.wire_text}", *args)))
        return started

    @defer.inlineCallbacks
    def start_peer(self, name, *args):
        daemon = self.daemon("orb-peer", name, "--listen", "tcp:0:interface=127.0.0.1", *args, *self.peer_args)
        yield daemon.start()
        return daemon

    @defer.inlineCallbacks
    def start_chain(self, name="chain", *args):
        """A `twistd orb-chain` (the embedded chain, OrbEscrow deployed): its JSON-RPC URL is ``chain_url(d)``."""
        daemon = self.daemon("orb-chain", name, "--http", "tcp:0:interface=127.0.0.1", *args)
        yield daemon.start()
        return daemon

    def stop_all(self, sig=signal.SIGTERM):
        return defer.DeferredList([d.stop(sig) for d in self.daemons], consumeErrors=True)


class ClientHandler(SessionHandler):
    """What an in-process client (a test, a bench, the fuzzer) waits for on one session."""

    def __init__(self):
        self.ready = defer.Deferred()
        self.lost = defer.Deferred()
        self.pong = None  # set to a Deferred to be fired with the next RTT measured

    def session_ready(self, p):
        if not self.ready.called:
            self.ready.callback(p)

    def session_lost(self, p, reason):
        if not self.ready.called:
            self.ready.errback(ConnectionError("lost before ready"))
        if not self.lost.called:
            self.lost.callback(None)

    def rtt_measured(self, p, rtt_ms):
        if self.pong is not None:
            d, self.pong = self.pong, None
            d.callback(rtt_ms)


@defer.inlineCallbacks
def open_session(host, port, network, roles=Role.PEER, key=None, listen=()):
    """A real TLS connection and ORB handshake to a daemon; fires with (protocol, handler)."""
    key = key or NodeKey.generate()
    handler = ClientHandler()
    identity = LocalIdentity(key.public_bytes, int(roles), listen=tuple(Endpoint(h, p) for h, p in listen))
    factory = OrbFactory(identity, handler, reactor, initiator=True, config=SessionConfig(network=network))
    endpoint = endpoints.TCP4ClientEndpoint(reactor, host, port, timeout=5)
    yield endpoint.connect(NodeTLS(key).wrap(factory, is_client=True))
    p = yield handler.ready
    return p, handler


def chain_url(chain):
    return f"http://127.0.0.1:{chain.info['http']}"


def send_ether(url, from_private_key, to_address, value_wei):
    """A plain transfer signed with a dev account's key (the chain signs for no one): Deferred[receipt].
    Blocking web3 calls run in a thread."""
    from orb.pay import client

    def send():
        from eth_account import Account

        w3 = client.connect(url)
        sender = Account.from_key(from_private_key)
        tx = {"to": w3.to_checksum_address(to_address), "value": value_wei, "gas": 21_000,
              "gasPrice": w3.eth.gas_price, "nonce": w3.eth.get_transaction_count(sender.address, "pending"),
              "chainId": w3.eth.chain_id}
        signed = sender.sign_transaction(tx)
        raw = getattr(signed, "raw_transaction", None) or signed.rawTransaction
        return w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(raw), timeout=30)

    return client.in_thread(send)
