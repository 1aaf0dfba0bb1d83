"""
The two same-run baselines of bench/invoke.py, each its own process on
loopback, serving ``POST /`` with the trivial function's ``handler(event,
context)`` from a function directory (its ``main.py``):

- ``plain``: a twisted.web handler calling the function in-process, no
  isolation at all: the upper bound;
- ``fork``: the classic FaaS watchdog: per request, fork+exec a fresh
  ``python -I -S`` that imports ``main.py``, reads the input on stdin,
  runs the handler and writes the output on stdout. At most
  ``--max-children`` at once; past that a request waits (bounded by
  ``--max-waiting``, then 503).

Both answer with Content-Length (twisted.web sets it for a body returned
from ``render``; the fork server writes it itself).

    python bench/_servers.py plain|fork FUNCTION_DIR --port-file FILE
"""

import argparse
import collections
import os
import sys

from twisted.internet import defer, endpoints, protocol, reactor
from twisted.web import resource, server

RUNNER = """\
import sys
sys.path.insert(0, sys.argv[1])
from main import handler
out = handler(sys.stdin.buffer.read(), None)
sys.stdout.buffer.write(out if isinstance(out, bytes) else str(out).encode())
"""
MAX_OUTPUT_BYTES = 1024 * 1024


def _bytes(out):
    return out if isinstance(out, bytes) else str(out).encode()


class Plain(resource.Resource):
    isLeaf = True

    def __init__(self, handler):
        super().__init__()
        self.handler = handler

    def render_POST(self, request):
        request.setHeader(b"Content-Type", b"application/octet-stream")
        return _bytes(self.handler(request.content.read(), None))


class Child(protocol.ProcessProtocol):
    def __init__(self, data):
        self.data = data
        self.out = bytearray()
        self.done = defer.Deferred()

    def connectionMade(self):
        self.transport.write(self.data)
        self.transport.closeStdin()

    def outReceived(self, data):
        if len(self.out) < MAX_OUTPUT_BYTES:
            self.out += data[:MAX_OUTPUT_BYTES - len(self.out)]

    def processEnded(self, reason):
        self.done.callback((reason.value.exitCode, bytes(self.out)))


class Fork(resource.Resource):
    isLeaf = True

    def __init__(self, function_dir, max_children, max_waiting):
        super().__init__()
        self.function_dir = function_dir
        self.max_children = max_children
        self.max_waiting = max_waiting
        self.running = 0
        self.waiting = collections.deque()

    def render_POST(self, request):
        if self.running >= self.max_children and len(self.waiting) >= self.max_waiting:
            request.setResponseCode(503)
            request.setHeader(b"Retry-After", b"1")
            return b"busy"
        data = request.content.read()
        if self.running < self.max_children:
            self._start(request, data)
        else:
            self.waiting.append((request, data))
        return server.NOT_DONE_YET

    def _start(self, request, data):
        self.running += 1
        child = Child(data)
        argv = [sys.executable, "-I", "-S", "-c", RUNNER, self.function_dir]
        reactor.spawnProcess(child, sys.executable, argv, env={}, path=self.function_dir)
        child.done.addCallback(self._answer, request)

    def _answer(self, outcome, request):
        self.running -= 1
        while self.waiting and self.running < self.max_children:
            waiting, data = self.waiting.popleft()
            if not waiting._disconnected:
                self._start(waiting, data)
        if request._disconnected:
            return
        code, out = outcome
        if code != 0:
            request.setResponseCode(502)
            out = b"the function failed"
        request.setHeader(b"Content-Type", b"application/octet-stream")
        request.setHeader(b"Content-Length", str(len(out)).encode())
        request.write(out)
        request.finish()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=("plain", "fork"))
    parser.add_argument("function_dir")
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--max-children", type=int, default=2 * (os.cpu_count() or 1))
    parser.add_argument("--max-waiting", type=int, default=1024)
    args = parser.parse_args()
    function_dir = os.path.abspath(args.function_dir)
    if args.kind == "plain":
        sys.path.insert(0, function_dir)
        from main import handler

        root = Plain(handler)
    else:
        root = Fork(function_dir, args.max_children, args.max_waiting)
    site = server.Site(root)
    site.displayTracebacks = False
    site.noisy = False

    def listening(port):
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(port.getHost().port))
        os.replace(tmp, args.port_file)

    d = endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1", backlog=1024).listen(site)
    d.addCallback(listening)
    d.addErrback(lambda f: (print(f.getTraceback(), file=sys.stderr), reactor.stop()))
    reactor.run()


if __name__ == "__main__":
    main()
