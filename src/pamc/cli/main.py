"""The ``pamc`` command: parses arguments and hands over to the library.

Errors the user can fix (:class:`~pamc.errors.PamcError`) become one line on stderr and exit
code 2; anything else is a bug and keeps its traceback. SIGTERM stops a command as Ctrl-C
does (a training run keeps its ``last`` checkpoint), with exit code 143 instead of 130.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from pamc import __version__
from pamc.cli import commands
from pamc.errors import PamcError


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program was so that it stops as after Ctrl-C."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        self.exit(2, f"pamc: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pamc", description="Partially annotated multi-label classification.")
    parser.add_argument("--version", action="version", version=f"pamc {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for command in commands.ALL:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    main_thread = threading.current_thread() is threading.main_thread()  # signals go to the main thread
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        return int(args.run(args) or 0)
    except PamcError as exc:
        print(f"pamc: error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("pamc: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("pamc: interrupted", file=sys.stderr)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
