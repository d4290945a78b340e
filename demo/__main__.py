"""Run the demo: `python -m demo` (what `make demo` does). `--once` shows the traffic and stops."""

import argparse
import asyncio
import sys

from demo.run import run


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("--once", action="store_true", help="stop after showing the traffic instead of waiting")
    args = parser.parse_args()
    try:
        return asyncio.run(run(once=args.once))
    except KeyboardInterrupt:
        return 0


sys.exit(main())
