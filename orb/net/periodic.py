# -*- test-case-name: tests.test_sessions -*-
"""Periodic jobs on an injected clock. One failure is logged, and the loop goes on."""

from twisted.internet import defer, task

from orb.net.logs import orb_logger

log = orb_logger()


class Periodic:
    """The periodic jobs of one daemon, started and stopped together."""

    def __init__(self, clock):
        self.clock = clock
        self._loops = []

    def every(self, interval_s, fn, now=True):
        def guarded():
            try:
                result = fn()
            except Exception:
                log.failure("periodic {name} failed", name=fn.__name__)
                return None
            if isinstance(result, defer.Deferred):
                result.addErrback(lambda f: log.failure("periodic {name} failed", f, name=fn.__name__))
            return None

        loop = task.LoopingCall(guarded)
        loop.clock = self.clock
        loop.start(interval_s, now=now)
        self._loops.append(loop)
        return loop

    def stop(self):
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops.clear()
