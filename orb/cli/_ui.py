# -*- test-case-name: tests.test_cli_function -*-
"""
Output for the ``orb`` verbs: one JSON document on stdout with ``--json``,
rich text for a person otherwise; errors as :class:`CommandError`; and a
progress bar for transfers that last more than a second.
"""

import json
import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

# Exit statuses of the orb command (also in `orb --help` and the README).
EXIT_OK = 0
EXIT_FAILED = 1  # the answer is no: a sample failed, the function failed, the bytes do not hash to the fid
EXIT_USAGE = 2  # bad arguments
EXIT_INPUT = 3  # a bad function directory, orb.toml, package, key or config file
EXIT_EXISTS = 4  # refused to overwrite: a key, or a non-empty directory for orb init
EXIT_JAIL = 5  # the local jail cannot run functions here (a layer is missing, the executor failed)
EXIT_NETWORK = 6  # the tracker or its API could not be reached, broke off, or did not answer in time
EXIT_REFUSED = 7  # the tracker refused the function: too large, a bad signature, an invalid manifest or package, samples failing there
EXIT_BUSY = 8  # the tracker is busy, full or failed on its side: try again later, or another tracker
EXIT_REPLICAS = 9  # deployed, but fewer verified replicas than the manifest's `replicas` before --timeout
EXIT_NOT_FOUND = 10  # the tracker knows no such function
EXIT_TIMEOUT = 11  # orb invoke: the call's deadline passed
EXIT_GONE = 12  # the function is past its sunset (orb invoke, info, deprecate, undeprecate)
EXIT_PAYMENT_REQUIRED = 15  # orb invoke: the function requires payment and its escrow deposit cannot pay (as orb fund's 15: unfunded)
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit status:
  0    success
  1    the answer is no: a sample or the function failed, or verify found other bytes
  2    bad arguments
  3    bad input: function directory, orb.toml, package, key or config file
  4    refused to overwrite (an existing key, a non-empty directory)
  5    the local jail cannot run functions here
  6    the tracker or its API could not be reached, broke off, or did not answer in time
  7    the tracker refused the function (too large, bad signature, invalid manifest or
       package, or its samples fail there)
  8    the tracker is busy, full or failed on its side: try again later or elsewhere
  9    deployed, but fewer verified replicas than wanted before --timeout
  10   the tracker knows no such function
  11   orb invoke: the call's deadline passed (1: the function failed; 8: no replica free)
  12   the function is past its sunset: gone (orb invoke, info, deprecate, undeprecate)
  15   orb invoke: payment_required: the function's escrow deposit cannot pay for the call
  130  interrupted"""


class CommandError(Exception):
    """A verb cannot do its job; ``message`` is one actionable sentence for a person."""

    def __init__(self, message, exit_code=EXIT_INPUT, kind="input", details=None):
        super().__init__(message)
        self.exit_code = exit_code
        self.kind = kind
        self.details = details or {}  # more members of the --json error document (e.g. the fid deployed)


def fid_argument(text):
    """A FID argument as raw fid bytes; CommandError (bad arguments) when it is not a valid fid."""
    from orb.protocol import fid as fidmod

    try:
        raw = fidmod.from_text(text)
        fidmod.check(raw)
    except fidmod.FidError:
        raise CommandError(f"FID {text!r} is not a fid: give the 53 lowercase base32 characters that "
                           "`orb hash` or `orb deploy` prints", EXIT_USAGE, "usage") from None
    return raw


def stdout_console():
    return Console(file=sys.stdout, highlight=False, soft_wrap=True)


def emit(args, doc, human):
    """Print ``doc`` as JSON when ``--json`` was given, else call ``human(console)``."""
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
        sys.stdout.flush()
    else:
        human(stdout_console())


def emit_error(args, verb, error):
    """An error: one line on stderr, and with --json a JSON document on stdout too."""
    message = str(error)
    print(f"orb {verb}: error: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        doc = {**getattr(error, "details", {}), "ok": False,
               "error": {"kind": error.kind, "message": message, "exit_code": error.exit_code}}
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


class TransferProgress:
    """
    A rich progress bar for one transfer, shown only once the transfer has
    lasted more than ``after_s`` (1 s), so quick transfers print nothing;
    never with ``enabled=False`` (``--json``) or when the console is not a
    terminal. Time comes from ``clock`` (monotonic seconds).

        with TransferProgress(total_bytes, "uploading", enabled=not args.json) as bar:
            for chunk in chunks:
                send(chunk)
                bar.advance(len(chunk))
    """

    def __init__(self, total_bytes, description, console=None, enabled=True, after_s=1.0, clock=time.monotonic):
        self.total_bytes = total_bytes
        self.description = description
        self.console = console or Console(file=sys.stderr)
        self.enabled = enabled and self.console.is_terminal
        self.after_s = after_s
        self.clock = clock
        self.started_at = clock()
        self.done_bytes = 0
        self.progress = None
        self._task = None

    @property
    def shown(self):
        return self.progress is not None

    def advance(self, n):
        self.done_bytes += n
        if self.progress is None and self.enabled and self.clock() - self.started_at > self.after_s:
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                     TransferSpeedColumn(), TimeRemainingColumn(), console=self.console,
                                     transient=False, auto_refresh=False)
            self._task = self.progress.add_task(self.description, total=self.total_bytes)
            self.progress.start()
        if self.progress is not None:
            self.progress.update(self._task, completed=self.done_bytes)
            self.progress.refresh()

    def close(self):
        if self.progress is not None:
            self.progress.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
