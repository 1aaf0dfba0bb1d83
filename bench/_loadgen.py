"""
The HTTP load generator of bench/invoke.py, run as its own process so that
it does not share a reactor (or a GIL) with what it measures.

Raw asyncio sockets, HTTP/1.1 with keep-alive, one request in flight per
connection; responses framed by Content-Length or chunked encoding. Two
modes:

- ``closed``: ``--concurrency C`` connections, each sending its next
  request as soon as the previous answer is in, for ``--duration`` s;
- ``open``: requests start at ``--rate`` per second, evenly spaced,
  whatever the answers do, for ``--duration`` s. A request takes an idle
  connection or opens one (at most ``--max-connections``; past that it
  waits for one, and the wait counts). Latency runs from the request's
  scheduled start, so a stalled server is not hidden (no coordinated
  omission); the median delay from a call's scheduled start to its send
(this generator's own timer lag, in every open-loop figure) is reported.

Every request has a deadline (``--timeout``); one that passes it counts as
a failure and its connection is closed. Prints one JSON document:
latencies (ms) of the 2xx answers in completion order, the 2xx answers
within the window (closed loop: the ``--duration``; calls still in flight
then are waited for, up to ``--timeout``, but not counted in it), the counts of
statuses and errors, how many answers carried ``--count-header`` (the
last value seen too), ``Orb-Replica`` values with their counts, and each
failed call (when it started, in seconds from the start, and what
happened; at most 10,000).

    python bench/_loadgen.py URL --mode closed --concurrency 8 --duration 5 [--body TEXT]
"""

import argparse
import asyncio
import collections
import json
import sys
import time
import urllib.parse

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_REPLICAS_COUNTED = 64
MAX_FAILURES_LISTED = 10_000


class BadResponse(Exception):
    pass


class Conn(asyncio.Protocol):
    """One keep-alive connection; ``send`` returns a future of (status, headers dict)."""

    def __init__(self, count_header):
        self.transport = None
        self.buf = bytearray()
        self.waiter = None
        self.closed = False
        self.count_header = count_header

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    def send(self, data):
        self.waiter = asyncio.get_running_loop().create_future()
        self.buf.clear()
        self.transport.write(data)
        return self.waiter

    def data_received(self, data):
        self.buf += data
        if self.waiter is None or self.waiter.done():
            return
        try:
            parsed = self._parse()
        except BadResponse as e:
            self.waiter.set_exception(e)
            self.transport.close()
            return
        if parsed is not None:
            self.waiter.set_result(parsed)

    def _parse(self):
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                raise BadResponse("response head too large")
            return None
        lines = bytes(buf[:end]).split(b"\r\n")
        try:
            status = int(lines[0].split(b" ", 2)[1])
        except (IndexError, ValueError):
            raise BadResponse(f"bad status line {lines[0][:80]!r}") from None
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        body_start = end + 4
        length = headers.get(b"content-length")
        if length is not None:
            if len(buf) - body_start < int(length):
                return None
            return status, headers
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            pos = body_start
            while True:
                line_end = buf.find(b"\r\n", pos)
                if line_end < 0:
                    return None
                try:
                    size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
                except ValueError:
                    raise BadResponse("bad chunk size") from None
                if size > MAX_BODY_BYTES:
                    raise BadResponse("chunk too large")
                if size == 0:
                    return (status, headers) if buf.find(b"\r\n\r\n", line_end) >= 0 else None
                pos = line_end + 2 + size + 2
                if pos > len(buf):
                    return None
        if status in (204, 304):
            return status, headers
        raise BadResponse("a response with neither Content-Length nor chunked encoding")


class Run:
    def __init__(self, args):
        url = urllib.parse.urlsplit(args.url)
        self.host, self.port = url.hostname, url.port or 80
        self.body = args.body.encode()
        self.request = (f"{args.method} {url.path or '/'} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                        f"Content-Length: {len(self.body)}\r\nContent-Type: application/octet-stream\r\n"
                        f"\r\n").encode() + self.body
        self.timeout = args.timeout
        self.count_header = args.count_header.lower().encode()
        self.latencies = []
        self.window_end = float("inf")  # closed loop: answers after this are not counted in the throughput
        self.ok_in_window = 0
        self.begin = time.perf_counter()
        self.lags = []  # open loop: ms from a call's scheduled start to the moment it is sent (or connects)
        self.failures = []  # (seconds from the start at which the failed call started, what happened)
        self.statuses = collections.Counter()
        self.errors = collections.Counter()
        self.counted = 0
        self.counted_value = None
        self.replicas = collections.Counter()
        self.idle = []
        self.opened = 0
        self.max_connections = args.max_connections
        self.slots = asyncio.Semaphore(args.max_connections)

    async def connect(self):
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: Conn(self.count_header), self.host, self.port)
        self.opened += 1
        return conn

    def failed(self, started, what):
        if len(self.failures) < MAX_FAILURES_LISTED:
            self.failures.append((round(started - self.begin, 4), what))

    async def call(self, conn, started):
        """One request on ``conn``; True if the connection may be reused."""
        try:
            status, headers = await asyncio.wait_for(conn.send(self.request), self.timeout)
        except asyncio.TimeoutError:
            self.errors["timeout"] += 1
            self.failed(started, "timeout")
            conn.transport.close()
            return False
        except (ConnectionError, BadResponse, OSError) as e:
            what = type(e).__name__ + ": " + str(e)[:80]
            self.errors[what] += 1
            self.failed(started, what)
            conn.transport.close()
            return False
        self.statuses[status] += 1
        if not 200 <= status < 300:
            self.failed(started, str(status))
        if 200 <= status < 300:
            now = time.perf_counter()
            self.latencies.append((now - started) * 1000)
            self.ok_in_window += now <= self.window_end
        if self.count_header in headers:
            self.counted += 1
            self.counted_value = headers[self.count_header].decode("latin-1")
        replica = headers.get(b"orb-replica")
        if replica is not None and (replica in self.replicas or len(self.replicas) < MAX_REPLICAS_COUNTED):
            self.replicas[replica] += 1
        return headers.get(b"connection", b"").lower() != b"close" and not conn.closed

    async def closed_loop(self, concurrency, duration):
        self.begin = time.perf_counter()
        stop = self.window_end = self.begin + duration

        async def worker():
            conn = None
            while time.perf_counter() < stop:
                if conn is None or conn.closed:
                    try:
                        conn = await self.connect()
                    except OSError as e:
                        self.errors["connect: " + str(e)[:80]] += 1
                        self.failed(time.perf_counter(), "connect")
                        await asyncio.sleep(0.01)
                        continue
                if not await self.call(conn, time.perf_counter()):
                    conn = None
            if conn is not None:
                conn.transport.close()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, stop - started

    async def open_loop(self, rate, duration):
        interval = 1.0 / rate
        begin = self.begin = time.perf_counter()
        total = int(rate * duration)
        tasks = set()

        async def one(scheduled):
            async with self.slots:
                self.lags.append((time.perf_counter() - scheduled) * 1000)
                conn = self.idle.pop() if self.idle else None
                if conn is None or conn.closed:
                    try:
                        conn = await self.connect()
                    except OSError as e:
                        self.errors["connect: " + str(e)[:80]] += 1
                        self.failed(scheduled, "connect")
                        return
                if await self.call(conn, scheduled):
                    self.idle.append(conn)

        for i in range(total):
            scheduled = begin + i * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            t = asyncio.ensure_future(one(scheduled))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - begin
        for conn in self.idle:
            conn.transport.close()
        return elapsed, elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--mode", choices=("closed", "open"), default="closed")
    parser.add_argument("--method", default="POST")
    parser.add_argument("--body", default="")
    parser.add_argument("--concurrency", type=int, default=1, help="closed: connections, one call in flight each")
    parser.add_argument("--rate", type=float, default=100.0, help="open: calls per second")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds per call before it counts as failed")
    parser.add_argument("--max-connections", type=int, default=256, help="open: at most this many connections")
    parser.add_argument("--count-header", default="Orb-Cached", help="count the answers carrying this header")
    args = parser.parse_args()
    run = Run(args)
    cpu_before = time.process_time()
    if args.mode == "closed":
        elapsed, window = asyncio.run(run.closed_loop(args.concurrency, args.duration))
    else:
        elapsed, window = asyncio.run(run.open_loop(args.rate, args.duration))
    cpu_s = time.process_time() - cpu_before  # the calls' own CPU: not the interpreter's start-up
    ok_in_window = run.ok_in_window if args.mode == "closed" else len(run.latencies)
    json.dump({"elapsed_s": elapsed, "window_s": window, "ok_in_window": ok_in_window,
               "latencies_ms": [round(x, 4) for x in run.latencies],
               "statuses": {str(k): v for k, v in run.statuses.items()}, "errors": dict(run.errors),
               "counted_header": args.count_header, "counted": run.counted, "counted_value": run.counted_value,
               "replicas": {k.decode("latin-1"): v for k, v in run.replicas.most_common()},
               "connections": run.opened, "failures": run.failures, "cpu_s": cpu_s,
               "start_lag_ms": sorted(run.lags)[len(run.lags) // 2] if run.lags else None}, sys.stdout)


if __name__ == "__main__":
    main()
