# -*- test-case-name: tests.test_exec_cli -*-
"""
The ``orb`` command: an argparse dispatcher over subcommand modules.

To add subcommands, write a module with ``register(subparsers)`` that calls
``subparsers.add_parser(...)`` and sets ``func=`` (``func(args) -> int``)
with ``set_defaults``, then list the module in :data:`COMMAND_MODULES`.
Bad arguments give one ``orb: error: ...`` line and exit status 2; a verb
that cannot do its job raises :class:`orb.cli._ui.CommandError`, which
prints ``orb VERB: error: ...`` (and, with ``--json``, a JSON error document
on stdout) and exits with the status it carries. The statuses are
``_ui.EXIT_CODES_HELP``, printed by ``orb --help``.
"""

import argparse
import importlib
import os
import sys

COMMAND_MODULES = [
    "orb.cli._function",
    "orb.cli._network",
    "orb.cli._names",
    "orb.cli._logs",
    "orb.cli._resolve",
    "orb.cli._sandbox",
    "orb.cli._wallet",
    "orb.cli._tokens",
    "orb.cli._secrets",
]


class UsageError(Exception):
    """A subcommand found its arguments unusable; the message is for a person."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{self.prog}: error: {message}")


def build_parser() -> argparse.ArgumentParser:
    from ._ui import EXIT_CODES_HELP

    parser = _Parser(prog="orb", description="ORB: a decentralized Function-as-a-Service network",
                     epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv=None) -> int:
    from ._ui import CommandError, emit_error

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = None
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            raise UsageError("orb: error: a command is required (see orb --help)")
        return int(args.func(args))
    except CommandError as e:
        emit_error(args, getattr(args, "command", ""), e)
        return e.exit_code
    except UsageError as e:
        msg = str(e)
        if not msg.startswith("orb"):
            msg = f"orb {getattr(args, 'command', '')}: error: {msg}"
        print(msg, file=sys.stderr)
        if "--json" in argv:
            import json

            doc = {"ok": False, "error": {"kind": "usage", "message": msg, "exit_code": 2}}
            print(json.dumps(doc, indent=2, sort_keys=True))
        return 2
    except SystemExit as e:  # --help, --version
        return e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``orb ... | head``): not an error worth a
        # traceback.  Point stdout at /dev/null so the final flush is quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1


if __name__ == "__main__":
    sys.exit(main())
