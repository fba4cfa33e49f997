"""
C{python -m cliproxyd COMMAND}: the tools around the daemon (the daemon
itself runs under C{twistd cliproxyd}).

    login   log an OAuth account in and write its credential file
"""

from __future__ import annotations

import argparse
import sys

from cliproxyd.credentials import login


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m cliproxyd",
        description="Tools around the cliproxyd daemon (which runs under `twistd cliproxyd`).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    login.add_command(commands)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main(sys.argv[1:])
