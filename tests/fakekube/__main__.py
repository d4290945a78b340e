"""Run a fake cluster by hand: `python -m tests.fakekube --port 6443 --kubeconfig /tmp/fake.kubeconfig`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from .server import FakeKube


async def _serve(args: argparse.Namespace) -> None:
    kube = FakeKube(port=args.port, bookmark_interval=args.bookmark_interval, install_crds=args.install_crds,
                    record_sent=args.record_sent)
    kube.hold_terminating(args.hold_terminating)
    async with kube:
        kube.write_kubeconfig(args.kubeconfig, context_name=args.context)
        print(f"fake Kubernetes API server on {kube.url}, kubeconfig {args.kubeconfig}; Ctrl-C stops it", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakekube", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--kubeconfig", required=True, help="where to write a kubeconfig for this server")
    parser.add_argument("--context", default="fake", help="context, cluster and user name in the kubeconfig")
    parser.add_argument("--bookmark-interval", type=float, default=5.0, help="seconds between BOOKMARK events")
    parser.add_argument("--hold-terminating", action="store_true", help="deleted pods stay Terminating")
    parser.add_argument("--install-crds", action="store_true", help="start with manifests/crds installed")
    parser.add_argument("--record-sent", action="store_true",
                        help="record when each watch event is sent (GET /fakekube/sent; see benchapi.py)")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
