# -*- test-case-name: tests.test_fetch -*-
"""
Fetching a package over the wire (RFC 9.5): FETCH/PACKAGE in chunks,
pipelined, resumable, from any of several sources.

    fetcher = Fetcher(clock, table, store)
    d = fetcher.fetch(fid, size, sources)   # fires with the stored Entry, or fails with FetchFailed

``sources`` are tried in order. Each is a ``SessionRecord`` (a session we
already hold: the tracker fetching from the deploying session passes that
record) or anything with ``node_id``, ``host`` and ``port`` (an OFFER's
``m.Source``): the session we hold with that node is used if there is one,
else it is dialled (Purpose.FETCH, a session that is used for this
download only and closed after it).

- **Chunks and window.** Requests are ``chunk_bytes`` long (1 MiB by
  default, the RFC's recommended maximum; a PACKAGE then takes 1 MiB + 54
  bytes of a 4 MiB frame) and at most ``window`` (4) chunks are held at a
  time: requested, received out of order, or waiting for the disk. Memory
  per download is bounded by ``window * chunk_bytes``; so is what a source
  must queue for us (under its 8 MiB output bound, RFC 13.5).
- **Resumable.** Bytes go to the store's Partial download as they arrive in
  order; a dropped source, a timeout or a restart resumes from what is held.
- **Timeouts.** Every FETCH has ``request_timeout_s``; so has each dial.
  A timeout, an ERROR, a lost session or a wrong answer moves to the next
  source.
- **Wrong answers.** A PACKAGE whose fid, offset or ``total_size`` is not
  what was asked (``total_size`` must equal the size OFFER or DEPLOY
  gave), or whose data is empty or longer than asked, costs the source a
  misbehaviour score and the source is abandoned.
- **Bad bytes.** When the assembled package does not hash to the fid the
  copy is discarded and fetched again from the start. A source that sent
  every byte of the bad copy is discouraged (``table.discourage``: it
  served what it cannot have verified); every source that contributed is
  kept in ``bad_sources`` for BAD_SOURCE_S and not asked again meanwhile.
- **Bounded.** At most ``max_fetches`` downloads at once; a second fetch
  of a fid that is already being fetched waits for the first.
- **Paced.** With ``rate_bytes_per_s`` (a peer's ``--fetch-rate``, for a
  home uplink) every download together asks for at most that many bytes a
  second: chunks shrink to a quarter second's worth (at least 4 KiB) and
  each FETCH waits until the bytes asked before it have had their time.
"""

import collections

from twisted.internet import defer, error

from orb.net import packages as pk
from orb.net.adapter import RemoteError, RequestTimeout
from orb.net.logs import escape, orb_logger
from orb.net.sessions import Purpose, SessionRecord, violation
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol import package as pkg
from orb.protocol.codes import ErrorCode
from orb.protocol.session import TooManyRequests

log = orb_logger()

DEFAULT_CHUNK_BYTES = 1024 * 1024
DEFAULT_WINDOW = 4
REQUEST_TIMEOUT_S = 15.0
MAX_FETCHES = 8
MIN_RATE_BYTES_PER_S = 1024
MIN_PACED_CHUNK_BYTES = 4096
MAX_ROUNDS = 3  # full passes over the sources after a copy failed to verify
BAD_SOURCE_S = 3600.0
MAX_BAD_SOURCES = 1024
MAX_SOURCES = 255


class FetchFailed(Exception):
    """No source gave a verified copy; ``reasons`` says what each attempt met, and
    ``bad_copy`` whether some source sent bytes that did not hash to the fid."""

    def __init__(self, fid, reasons, bad_copy=False):
        self.fid = fid
        self.reasons = list(reasons)[-16:]
        self.bad_copy = bad_copy
        super().__init__(f"cannot fetch {_name(fid)}: " + ("; ".join(self.reasons) or "no usable source"))


class SourceFailed(Exception):
    """One source could not finish; the next is tried."""


def _name(fid):
    try:
        return fidmod.to_text(fid)
    except fidmod.FidError:
        return "(invalid fid)"


class Fetcher:
    def __init__(self, clock, table, store, *, chunk_bytes=DEFAULT_CHUNK_BYTES, window=DEFAULT_WINDOW,
                 request_timeout_s=REQUEST_TIMEOUT_S, max_package_bytes=pkg.MAX_PACKAGE_BYTES,
                 max_fetches=MAX_FETCHES, rate_bytes_per_s=None):
        if not 1 <= chunk_bytes <= pk.MAX_READ_BYTES or window < 1:
            raise ValueError(f"chunk_bytes must be 1..{pk.MAX_READ_BYTES} and window at least 1")
        if rate_bytes_per_s is not None:
            if rate_bytes_per_s < MIN_RATE_BYTES_PER_S:
                raise ValueError(f"a fetch rate must be at least {MIN_RATE_BYTES_PER_S} bytes a second")
            chunk_bytes = min(chunk_bytes, max(MIN_PACED_CHUNK_BYTES, rate_bytes_per_s // 4))
        self.clock = clock
        self.table = table
        self.store = store
        self.chunk_bytes = chunk_bytes
        self.window = window
        self.request_timeout_s = request_timeout_s
        self.max_package_bytes = max_package_bytes
        self.max_fetches = max_fetches
        self.rate_bytes_per_s = rate_bytes_per_s
        self._next_free = 0.0  # paced: when the bytes asked so far have had their time
        self.bad_sources = collections.OrderedDict()  # node id -> until (seconds): sent bytes of a bad copy
        self._running = {}  # fid -> _Download

    def fetching(self, fid):
        return fid in self._running

    def pace(self, length):
        """Seconds to wait before asking for ``length`` more bytes (0: ask now, and it is counted)."""
        if self.rate_bytes_per_s is None:
            return 0.0
        now = self.clock.seconds()
        if now < self._next_free:
            return self._next_free - now
        self._next_free = max(now, self._next_free) + length / self.rate_bytes_per_s
        return 0.0

    def __len__(self):
        return len(self._running)

    def fetch(self, fid, size, sources, version=1, discourage=True):
        """Fetch, verify and store ``fid`` (``size`` bytes) from ``sources``; fires with its Entry.
        ``discourage=False``: a source that sends a bad copy is only left, not discouraged (a
        tracker fetching from a deployer answers its DEPLOY with the reason instead)."""
        entry = self.store.get(fid)
        if entry is not None:
            return defer.succeed(entry)
        running = self._running.get(fid)
        if running is not None:
            return running.subscribe()
        try:
            fidmod.check(fid)
        except fidmod.FidError as e:
            return defer.fail(FetchFailed(fid, [str(e)]))
        if not 0 < size <= self.max_package_bytes:
            return defer.fail(FetchFailed(fid, [f"size {size} is not 1..{self.max_package_bytes}"]))
        if len(self._running) >= self.max_fetches:
            return defer.fail(FetchFailed(fid, [f"{self.max_fetches} downloads are already running"]))
        download = _Download(self, fid, size, list(sources)[:MAX_SOURCES], version, discourage)
        self._running[fid] = download
        d = download.subscribe()
        download.start().addBoth(self._finished, download)
        return d

    def _finished(self, result, download):
        if self._running.get(download.fid) is download:
            del self._running[download.fid]
        partial = self.store.partial(download.fid)
        if partial is not None and partial.held == 0 and hasattr(result, "trap"):
            # Nothing to resume: give its reservation back at once (a failed OFFER must not hold disk).
            partial.discard().addErrback(lambda f: log.failure("discarding an empty download", f))
        download.settle(result)

    def is_bad(self, node_id):
        until = self.bad_sources.get(node_id)
        if until is None:
            return False
        if until <= self.clock.seconds():
            del self.bad_sources[node_id]
            return False
        return True

    def mark_bad(self, node_id):
        self.bad_sources.pop(node_id, None)
        self.bad_sources[node_id] = self.clock.seconds() + BAD_SOURCE_S
        while len(self.bad_sources) > MAX_BAD_SOURCES:
            self.bad_sources.popitem(last=False)

    # --- sessions to sources ------------------------------------------------------------

    def session_for(self, source):
        """(record, owned): a ready session with ``source``; ``owned`` if dialled for this download."""
        if isinstance(source, SessionRecord):
            if not source.ready:
                return defer.fail(SourceFailed("the session is closed"))
            return defer.succeed((source, False))
        if source.node_id == self.table.local.node_id:
            return defer.fail(SourceFailed("that is this node"))
        record = self.table.get(source.node_id)
        if record is not None and record.ready:
            return defer.succeed((record, False))
        result = defer.Deferred()
        dialled = self.table.dial(source.host, source.port, expected_node_id=source.node_id, purpose=Purpose.FETCH)

        def timed_out():
            if not result.called:
                result.errback(SourceFailed(f"no session within {self.request_timeout_s:g} s"))

        timer = self.clock.callLater(self.request_timeout_s, timed_out)

        def ready(record):
            if timer.active():
                timer.cancel()
            if result.called:
                record.close("fetch abandoned")  # too late: nobody waits for it any more
            else:
                result.callback((record, True))

        def failed(failure):
            if timer.active():
                timer.cancel()
            if not result.called:
                result.errback(SourceFailed(f"cannot connect: {failure.getErrorMessage()}"))

        dialled.addCallbacks(ready, failed)
        return result


class _Download:
    """One fid being fetched: tries the sources in turn, resuming from what the store holds."""

    def __init__(self, fetcher, fid, size, sources, version, discourage=True):
        self.fetcher = fetcher
        self.fid = fid
        self.size = size
        self.discourage = discourage  # a source that sent all of a bad copy is discouraged
        self.bad_copy = False  # some source sent a copy that did not verify
        self.sources = sources
        self.version = version
        self.waiters = []
        self.reasons = []
        self.contributors = set()  # node ids that sent bytes of the partial copy
        self.unknown_bytes = False  # the partial held bytes from before this download (a restart)

    def subscribe(self):
        d = defer.Deferred()
        self.waiters.append(d)
        return d

    def settle(self, result):
        waiters, self.waiters = self.waiters, []
        for d in waiters:
            if isinstance(result, Exception) or hasattr(result, "trap"):
                d.errback(result)
            else:
                d.callback(result)

    def _source_id(self, source):
        return getattr(source, "node_id", None)

    @defer.inlineCallbacks
    def start(self):
        fetcher = self.fetcher
        try:
            partial = yield fetcher.store.begin(self.fid, self.size)
        except pk.StoreError as e:
            raise FetchFailed(self.fid, [f"not stored: {e}"]) from None
        self.unknown_bytes = partial.held > 0
        for _ in range(MAX_ROUNDS):
            candidates = [s for s in self.sources if not fetcher.is_bad(self._source_id(s))]
            for source in candidates:
                if partial.held == self.size:
                    break
                entry = yield self._try(source, partial)
                if entry is not None:
                    return entry
                if partial.closed:  # the copy failed to verify: start again from zero
                    break
            else:
                if partial.held < self.size:
                    raise FetchFailed(self.fid, self.reasons or ["no usable source"], self.bad_copy)
            if partial.closed:
                partial = yield fetcher.store.begin(self.fid, self.size)
                self.contributors.clear()
                self.unknown_bytes = False
                continue
            if partial.held == self.size:  # resumed a complete copy from before a restart
                entry = yield self._finish(partial, None)
                if entry is not None:
                    return entry
                partial = yield fetcher.store.begin(self.fid, self.size)
        raise FetchFailed(self.fid, self.reasons, self.bad_copy)

    @defer.inlineCallbacks
    def _try(self, source, partial):
        """Fetch what is missing from one source; the Entry if the copy verified, else None."""
        fetcher = self.fetcher
        try:
            record, owned = yield fetcher.session_for(source)
        except SourceFailed as e:
            self.reasons.append(f"{_source_name(source)}: {e}")
            return None
        try:
            try:
                yield _Transfer(fetcher, self, record, partial).start()
            except SourceFailed as e:
                self.reasons.append(f"{record.name}: {e}")
                log.info("fetching {fid} from {peer}: {why}; trying the next source", fid=_name(self.fid),
                         peer=record.name, why=escape(str(e)))
                return None
            entry = yield self._finish(partial, record)
            return entry
        finally:
            if owned:
                record.close("fetch done")

    @defer.inlineCallbacks
    def _finish(self, partial, record):
        try:
            entry = yield partial.finish(self.version)
        except pk.VerifyError as e:
            self._blame(str(e), record)
            return None
        return entry

    def _blame(self, why, record):
        fetcher = self.fetcher
        self.bad_copy = True
        self.reasons.append(f"the copy did not verify ({why})")
        sole = len(self.contributors) == 1 and not self.unknown_bytes
        for node_id in self.contributors:
            fetcher.mark_bad(node_id)
        if sole and record is not None and record.node_id in self.contributors and self.discourage:
            log.warn("{peer} sent bytes of {fid} that do not hash to it: discouraged", peer=record.name,
                     fid=_name(self.fid))
            fetcher.table.discourage(record.protocol, f"served package bytes that do not hash to {_name(self.fid)}")
        else:
            log.warn("a copy of {fid} from {count} sources did not verify; fetching it again", fid=_name(self.fid),
                     count=len(self.contributors))


def _source_name(source):
    node_id = getattr(source, "node_id", b"")
    return node_id.hex()[:16] or "?"


class _Transfer:
    """The pipelined FETCHes to one source, until the partial copy is complete or the source fails."""

    def __init__(self, fetcher, download, record, partial):
        self.fetcher = fetcher
        self.download = download
        self.record = record
        self.partial = partial
        self.fid = download.fid
        self.size = download.size
        self.next_offset = partial.held
        self.commit_offset = partial.held
        self.retry = collections.deque()  # (offset, length): the rest of a short answer
        self.inflight = {}  # offset -> length requested
        self.arrived = {}  # offset -> data, received ahead of the next byte to write
        self.writing = 0  # chunks handed to the disk and not yet written
        self.throttled = False
        self.paced = None  # the call that resumes asking once the fetch rate allows it
        self.failed = False
        self.done = defer.Deferred()

    def start(self):
        self._fill()
        return self.done

    def _slots(self):
        return len(self.inflight) + len(self.arrived) + self.writing

    def _fill(self):
        while (not self.failed and not self.throttled and self._slots() < self.fetcher.window
               and (self.retry or self.next_offset < self.size)):
            if self.paced is not None:
                return
            pending = self.retry[0] if self.retry else (self.next_offset,
                                                        min(self.fetcher.chunk_bytes, self.size - self.next_offset))
            wait = self.fetcher.pace(pending[1])
            if wait > 0:
                self.paced = self.fetcher.clock.callLater(wait, self._resume)
                return
            if self.retry:
                offset, length = self.retry.popleft()
            else:
                offset, length = pending
                self.next_offset += length
            try:
                d = self.record.request(m.Fetch(fid=self.fid, offset=offset, length=length),
                                        timeout_s=self.fetcher.request_timeout_s)
            except TooManyRequests:
                self.retry.appendleft((offset, length))
                if not self.inflight:
                    self._fail("the session has too many requests outstanding")
                else:
                    self.throttled = True  # until an answer frees a request slot
                return
            self.inflight[offset] = length
            d.addCallbacks(self._answered, self._refused, callbackArgs=(offset, length), errbackArgs=(offset,))
        if (not self.failed and not self.done.called and self.commit_offset == self.size and not self.writing
                and not self.inflight):
            self.done.callback(None)

    def _resume(self):
        self.paced = None
        self._fill()

    def _answered(self, message, offset, length):
        if self.failed:
            return
        self.inflight.pop(offset, None)
        self.throttled = False
        data = message.data
        if message.fid != self.fid or message.offset != offset:
            return self._fail("answered with another fid or offset", misbehaved=True)
        if message.total_size != self.size:
            return self._fail(f"says the package has {message.total_size} bytes, not {self.size}", misbehaved=True)
        if not data or len(data) > length:
            return self._fail(f"answered {len(data)} bytes to a FETCH of {length}", misbehaved=True)
        if len(data) < length:
            self.retry.appendleft((offset + len(data), length - len(data)))
        self.arrived[offset] = data
        self._commit()
        self._fill()

    def _commit(self):
        while self.commit_offset in self.arrived:
            data = self.arrived.pop(self.commit_offset)
            self.commit_offset += len(data)
            self.writing += 1
            self.download.contributors.add(self.record.node_id)
            self.partial.append(data).addCallbacks(self._written, self._write_failed)

    def _written(self, _):
        self.writing -= 1
        self._fill()

    def _write_failed(self, failure):
        self.writing -= 1
        log.failure("writing a chunk of {fid}", failure, fid=_name(self.fid))
        self._fail(f"cannot write the chunk: {failure.getErrorMessage()}")

    def _refused(self, failure, offset):
        self.inflight.pop(offset, None)
        if self.failed:
            return
        if failure.check(RemoteError):
            code = failure.value.code
            self._fail(f"ERROR {_code(code)}: {escape(failure.value.text, 80)}")
        elif failure.check(RequestTimeout):
            self._fail(f"no answer within {self.fetcher.request_timeout_s:g} s")
        elif failure.check(error.ConnectionLost, error.ConnectionDone):
            self._fail("the session was lost")
        else:
            self._fail(f"failed: {failure.getErrorMessage()}")

    def _fail(self, why, misbehaved=False):
        if self.failed:
            return
        self.failed = True
        if self.paced is not None and self.paced.active():
            self.paced.cancel()
        self.paced = None
        if misbehaved:
            self.fetcher.table.misbehaved(self.record.protocol,
                                          violation(f"PACKAGE for {_name(self.fid)}: {why}", ErrorCode.UNEXPECTED,
                                                    fatal=False))
        self.done.errback(SourceFailed(why))


def _code(code):
    try:
        return ErrorCode(code).name.lower()
    except ValueError:
        return f"code {code}"
