# -*- test-case-name: tests.test_network -*-
"""
The service layer around a daemon core: everything that does I/O.

``NodeService`` is the MultiService that ``makeService`` returns. On start
it loads the node key, opens the SQLite stores (the address book, and the
role's own: the tracker's registry), builds the core with them, and then
adds one ``ListenerService`` per endpoint: the wire listener (TLS), and
the role's others (the tracker's HTTP; DNS later). It writes
``ports.json`` once listening and ``status.json`` every SAVE_INTERVAL_S,
saves the stores on the same beat and on stop, and turns a start-up
failure into one line on stderr and exit status 1.

The cores never listen, write files, print or exit; this module does.
"""

import json
import os
import random
import sys

import attrs
from twisted.application import service
from twisted.internet import defer, endpoints, error

from orb._db import Database
from orb.identity import NodeKey
from orb.net import addrbook as ab
from orb.net.logs import orb_logger
from orb.net.sessions import TLSConnector
from orb.net.tls import NodeTLS, TLSMaterialError, ca_node_tls, load_certificates

log = orb_logger()

SAVE_INTERVAL_S = 5.0
ADDR_BOOK_FILE = "addrbook.sqlite"


class StartupError(Exception):
    """The daemon cannot start: one line for the operator."""


@attrs.frozen
class Store:
    """A SQLite file a daemon keeps: loaded before listening, saved periodically and on stop."""

    name: str
    filename: str
    migrations: list
    load: object  # (db, node key) -> Deferred[state]
    save: object  # (state, db) -> Deferred


@attrs.frozen
class Endpoint:
    """A listening endpoint besides the wire: its name in ports.json, its string, and its factory."""

    name: str
    description: str  # a Twisted endpoint string
    factory: object  # (core) -> IProtocolFactory


class ListenerService(service.Service):
    """Listens on one endpoint while running."""

    def __init__(self, reactor, name, description, factory):
        self.setName(name)
        self.reactor = reactor
        self.description = description
        self.factory = factory
        self.port = None

    @defer.inlineCallbacks
    def listen(self):
        try:
            endpoint = endpoints.serverFromString(self.reactor, self.description)
            self.port = yield endpoint.listen(self.factory)
        except error.CannotListenError as e:
            raise StartupError(f"cannot listen on {self.description}: {e.socketError}") from None
        return self.port

    def stopService(self):
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None


class NodeService(service.MultiService):
    """One daemon: its stores, its core, its listeners and its state files."""

    def __init__(self, reactor, config, build, *, stores=(), endpoints=(), kind="node", rng=None):
        super().__init__()
        self.reactor = reactor
        self.config = config  # the NodeConfig
        self.build = build  # (key, rng, addrbook, states: {name: state}, connector) -> core
        self.stores = tuple(stores)
        self.endpoints = tuple(endpoints)
        self.kind = kind
        self.rng = rng or random.SystemRandom()
        self.core = None
        self.started = defer.Deferred()  # fires with the core once listening
        self._dbs = {}
        self._states = {}

    def startService(self):
        super().startService()
        self._start().addCallbacks(self.started.callback, self._start_failed)

    @defer.inlineCallbacks
    def _start(self):
        data_dir = self.config.data_dir
        key = NodeKey.load_or_create(data_dir)
        book = Store("addrbook", ADDR_BOOK_FILE, ab.MIGRATIONS,
                     lambda db, key: ab.AddressBook.load(db, self.reactor, allow_loopback=self.config.allow_loopback,
                                                    allow_private=self.config.allow_private),
                     lambda state, db: state.dump(db))
        for store in (book,) + self.stores:
            db = yield Database.open(self.reactor, os.path.join(data_dir, store.filename), store.migrations)
            self._dbs[store.name] = (store, db)
            self._states[store.name] = yield store.load(db, key)
        try:
            tls = ca_node_tls(key, self.config.tls_cert) if self.config.tls_cert else NodeTLS(key)
            anchors = load_certificates(self.config.ca_file, "--ca") if self.config.ca_file else ()
        except TLSMaterialError as e:
            raise StartupError(str(e)) from None
        core = self.build(key, self.rng, self._states["addrbook"], self._states,
                          TLSConnector(self.reactor, tls, anchors))
        self.core = core
        listeners = []
        if self.config.listen is not None:  # None: a peer that accepts no connections (--no-listen)
            wire_factory = tls.wrap(core.table.factory(), is_client=False)
            wire_factory.noisy = False
            listeners.append(ListenerService(self.reactor, "wire", self.config.listen, wire_factory))
        for extra in self.endpoints:
            factory = extra.factory(core)
            factory.noisy = False
            listeners.append(ListenerService(self.reactor, extra.name, extra.description, factory))
        for listener in listeners:
            listener.setServiceParent(self)
            port = yield listener.listen()
            address = port.getHost()
            log.info("{kind} {name} on {host}:{port}", kind=self.kind, name=listener.name, host=address.host,
                     port=address.port)
        if self.config.listen is None:
            log.info("{kind} {node_id} accepts no connections: reached through RELAY (network {network})",
                     kind=self.kind, node_id=key.node_id.hex()[:16], network=self.config.network)
        else:
            wire = listeners[0].port.getHost()
            core.local.listening = (wire.host, wire.port)
            if core.local.advertise is None and wire.host not in ("0.0.0.0", "::"):
                core.local.advertise = (wire.host, wire.port)
            log.info("{kind} {node_id} listening on {host}:{port} (network {network})", kind=self.kind,
                     node_id=key.node_id.hex()[:16], host=wire.host, port=wire.port, network=self.config.network)
        core.start()
        core.periodic.every(SAVE_INTERVAL_S, self.save, now=False)
        self._write_json("status.json", core.status())
        ports = {listener.name: listener.port.getHost().port for listener in listeners}
        self._write_json("ports.json", {**ports, "node_id": key.node_id.hex(), "pid": os.getpid()})
        return core

    def _start_failed(self, failure):
        message = failure.getErrorMessage() if failure.check(StartupError) else repr(failure.value)
        if not failure.check(StartupError):
            log.failure("start-up failed", failure)
        sys.stderr.write(f"{self.kind}: {message}\n")
        log.critical("start-up failed: {message}", message=message)
        if self.reactor.running:
            self.reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
            self.reactor.stop()
        self.started.errback(failure)

    @defer.inlineCallbacks
    def save(self):
        for name, (store, db) in self._dbs.items():
            if not db.closed:
                yield store.save(self._states[name], db)
        if self.core is not None:
            self._write_json("status.json", self.core.status())

    @defer.inlineCallbacks
    def stopService(self):
        if self.core is not None:
            self.core.stop()
        yield super().stopService()  # the listeners
        if self.core is not None:
            yield self.save()
        for _, db in self._dbs.values():
            yield db.close()
        self._dbs.clear()
        log.info("stopped; state saved")

    def _write_json(self, name, obj):
        path = os.path.join(self.config.data_dir, name)
        with open(path + ".tmp", "w") as f:
            json.dump(obj, f)
        os.replace(path + ".tmp", path)
