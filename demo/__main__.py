"""Run the demo: `python -m demo` (what `make demo` does).

The control plane, two Envoys and sample backends on loopback, on a block of consecutive ports: free ones found at
start unless --ports BASE pins them. On any failure it says why, prints the tail of the control plane's log (and of
the Envoy that failed), stops everything it started and exits 1.
"""

import argparse
import asyncio
import sys

from demo import ports
from demo.run import run


def _base(value: str) -> int:
    try:
        base = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {value!r}") from None
    if not 1 <= base <= ports.MAX_BASE:
        raise argparse.ArgumentTypeError(f"expected 1-{ports.MAX_BASE} (the block has {ports.COUNT} ports), got {base}")
    return base


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description=__doc__,
        epilog="ports (BASE is --ports, or the free block's first port; all on 127.0.0.1 unless said):\n"
        + "\n".join(f"  {name:<8} {what}" for name, what in ports.layout()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--once", action="store_true", help="stop after showing the traffic instead of waiting")
    parser.add_argument(
        "--ports", type=_base, metavar="BASE",
        help=f"use the ports BASE to BASE+{ports.COUNT - 1} (below), e.g. --ports 18000, to know them before it "
             "starts; default: a block of free ones found at start (printed)",
    )  # fmt: skip
    args = parser.parse_args()
    try:
        chosen = ports.Ports.at(args.ports) if args.ports is not None else ports.find_free()
    except OSError as e:
        print(f"demo: {e}; pin the ports with --ports BASE", file=sys.stderr)
        return 1
    try:
        return asyncio.run(run(chosen, pinned=args.ports is not None, once=args.once))
    except KeyboardInterrupt:
        return 0


sys.exit(main())
