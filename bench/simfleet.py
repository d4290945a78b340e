"""A fleet of simulated Envoys (bench.adsclient) in one process, driven over JSON lines on stdin/stdout.

    python -m bench.simfleet --xds 127.0.0.1:18000 --nodes 100 --mode sotw

Nodes are node-0 .. node-(N-1) (from node-<F> with --first-node F); one gRPC channel (one HTTP/2 connection)
carries --per-channel streams, so the server's max concurrent streams must allow that many. Times are
time.monotonic() (CLOCK_MONOTONIC: comparable between processes on one Linux host).

Cost: with the default 60 KB Envoy-like node, 1,000 clients take about 0.2-0.3 s of one core per fan-out round (one
EDS response and its ACK each), about what a trivial grpc.aio server with pre-serialized responses spends on the
same round. If the server under test gets near that, split the nodes over several simfleet processes.

Protocol: one JSON object per line each way. Once every client is started the fleet writes
{"event": "ready", "nodes": N, "now": T}. Then each request gets one reply, in order (one request at a time); a reply
echoes the request's "id" if it has one and has "ok" (false with "error" on failure). Types are "cds", "eds", "lds",
"rds".

  {"cmd": "status"}
      -> {"ok": true, "now", "nodes", "connected", "streams", "messages", "bytes", "nacks",
          "acked": {type: {version: number of nodes}}}
  {"cmd": "mark", "forget": false}
      -> {"ok": true, "mark": T}: the current time; with "forget", arrivals before T are dropped (to bound memory).
  {"cmd": "wait", "listeners": [name], "clusters": [name], "endpoints": {eds_name: ["ip:port"]},
   "absent": {eds_name: ["ip:port"]}, "versions": {node_id: {type: version}}, "nodes": [node_id], "timeout": 30}
      -> Wait until every node has ACKed LDS and holds (ACKed) all those listeners, clusters and endpoints and none of
         the absent endpoints, and has ACKed exactly the version given for it in "versions" of each type there.
         "nodes" (default: the keys of "versions" if given, else every node) limits the wait to those nodes.
         {"ok": true, "elapsed", "first", "p50", "p99", "last"}: times at which nodes got there
         (the arrival that completed it; for a node already there, its latest arrival); on timeout
         {"ok": false, "error": "timeout", "satisfied": n, "pending": [first 20 node ids], "pending_count"}.
  {"cmd": "arrivals", "since": T, "types": ["eds"], "endpoints": false}
      -> {"ok": true, "arrivals": [{"node", "t", "type", "version", "nonce", "resources", "removed", "bytes", "nacked"}
         (+ "endpoints": {eds_name: ["ip:port"]} if asked and the arrival has some, see adsclient.Arrival)]},
         sorted by t.
  {"cmd": "stop"} (or end of stdin)
      -> the status reply with "stopped": true, then the process exits.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import grpc

from bench.adsclient import CDS, EDS, LDS, RDS, AdsClient, Arrival, DeltaClient, Predicate, SotwClient

TYPES = {"cds": CDS, "eds": EDS, "lds": LDS, "rds": RDS}
_SHORT = {url: short for short, url in TYPES.items()}
_CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 256 << 20)]
Reply = dict[str, Any]


def target(request: dict[str, Any]) -> Predicate:
    """The predicate of a "wait" request."""
    listeners, clusters = request.get("listeners", []), request.get("clusters", [])
    present = {name: frozenset(eps) for name, eps in request.get("endpoints", {}).items()}
    absent = {name: frozenset(eps) for name, eps in request.get("absent", {}).items()}
    versions = {
        node: [(TYPES[short], version) for short, version in by_type.items()]
        for node, by_type in request.get("versions", {}).items()
    }

    def holds(client: AdsClient) -> bool:
        held = client.endpoints
        return (
            LDS in client.acked_versions
            and all(client.acked_versions.get(url) == version for url, version in versions.get(client.node_id, ()))
            and all(name in client.listeners for name in listeners)
            and all(name in client.clusters for name in clusters)
            and all(eps <= held.get(name, frozenset()) for name, eps in present.items())
            and not any(eps & held.get(name, frozenset()) for name, eps in absent.items())
        )

    return holds


def arrival_json(node_id: str, arrival: Arrival, endpoints: bool) -> Reply:
    """One arrival as a JSON object."""
    out = {
        "node": node_id,
        "t": arrival.t,
        "type": _SHORT.get(arrival.type_url, arrival.type_url),
        "version": arrival.version,
        "nonce": arrival.nonce,
        "resources": arrival.resources,
        "removed": arrival.removed,
        "bytes": arrival.nbytes,
        "nacked": arrival.nacked,
    }
    if endpoints and arrival.endpoints:
        out["endpoints"] = {name: sorted(eps) for name, eps in arrival.endpoints.items()}
    return out


class Fleet:
    """N clients over a few channels, answering control requests."""

    def __init__(self, clients: list[AdsClient], xds: str, per_channel: int) -> None:
        self.clients = clients
        self._xds = xds
        self._per_channel = per_channel
        self._commands: dict[str, Callable[[dict[str, Any]], Any]] = {
            "status": self.status,
            "mark": self.mark,
            "wait": self.wait,
            "arrivals": self.arrivals,
        }

    async def serve(self, requests: asyncio.StreamReader, write: Callable[[Reply], None]) -> None:
        """Run the clients; answer requests until "stop" or end of input."""
        count = math.ceil(len(self.clients) / self._per_channel)
        channels = [grpc.aio.insecure_channel(self._xds, options=_CHANNEL_OPTIONS) for _ in range(count)]
        tasks = [
            asyncio.create_task(client.run(channels[i // self._per_channel])) for i, client in enumerate(self.clients)
        ]
        write({"event": "ready", "nodes": len(self.clients), "now": time.monotonic()})
        try:
            while line := await requests.readline():
                reply = await self.handle(line)
                write(reply)
                if reply.get("stopped"):
                    break
        finally:
            for client in self.clients:
                client.stop()
            await asyncio.wait(tasks, timeout=5)
            await asyncio.gather(*(channel.close() for channel in channels))

    async def handle(self, line: bytes) -> Reply:
        """Answer one request line."""
        try:
            request = json.loads(line)
            command = request.get("cmd")
            if command == "stop":
                reply = {**self.status(request), "stopped": True}
            elif command in self._commands:
                reply = self._commands[command](request)
                if asyncio.iscoroutine(reply):
                    reply = await reply
            else:
                reply = {"ok": False, "error": f"unknown cmd {command!r}"}
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            request, reply = {}, {"ok": False, "error": f"bad request: {exc}"}
        if isinstance(request, dict) and "id" in request:
            reply["id"] = request["id"]
        return reply

    def status(self, _request: dict[str, Any]) -> Reply:
        """Counters summed over the fleet."""
        acked: dict[str, Counter[str]] = {short: Counter() for short in TYPES}
        for client in self.clients:
            for url, version in client.acked_versions.items():
                acked[_SHORT.get(url, url)][version] += 1
        clients = self.clients
        return {
            "ok": True,
            "now": time.monotonic(),
            "nodes": len(clients),
            "connected": sum(client.connected for client in clients),
            "streams": sum(client.streams for client in clients),
            "messages": sum(client.messages_received for client in clients),
            "bytes": sum(client.bytes_received for client in clients),
            "nacks": sum(client.nacks_sent for client in clients),
            "acked": {short: dict(counter) for short, counter in acked.items()},
        }

    def mark(self, request: dict[str, Any]) -> Reply:
        """The current time; optionally forget older arrivals."""
        now = time.monotonic()
        if request.get("forget"):
            for client in self.clients:
                del client.arrivals[: bisect.bisect_left(client.arrivals, now, key=lambda a: a.t)]
        return {"ok": True, "mark": now}

    async def wait(self, request: dict[str, Any]) -> Reply:
        """Wait until every node holds the target."""
        holds, timeout, start = target(request), float(request.get("timeout", 30)), time.monotonic()
        names = request["nodes"] if "nodes" in request else list(request["versions"]) if "versions" in request else None
        clients = self.clients if names is None else [c for c in self.clients if c.node_id in set(names)]
        times = await asyncio.gather(*(client.wait_for(holds, timeout) for client in clients))
        done = sorted(t for t in times if t is not None)
        pending = [client.node_id for client, t in zip(clients, times) if t is None]
        reply: Reply = {"ok": not pending, "elapsed": time.monotonic() - start, "satisfied": len(done)}
        if done:
            reply |= {
                "first": done[0],
                "p50": done[len(done) // 2],
                "p99": done[min(len(done) - 1, int(len(done) * 0.99))],
                "last": done[-1],
            }
        if pending:
            reply |= {"error": "timeout", "pending": pending[:20], "pending_count": len(pending)}
        return reply

    def arrivals(self, request: dict[str, Any]) -> Reply:
        """Arrivals at or after "since", of the given types."""
        since, endpoints = float(request.get("since", 0)), bool(request.get("endpoints", False))
        types = {TYPES[short] for short in request.get("types", TYPES)}
        out = [
            arrival_json(client.node_id, arrival, endpoints)
            for client in self.clients
            for arrival in client.arrivals[bisect.bisect_left(client.arrivals, since, key=lambda a: a.t) :]
            if arrival.type_url in types
        ]
        out.sort(key=lambda item: item["t"])
        return {"ok": True, "arrivals": out}


def _write(reply: Reply) -> None:
    sys.stdout.write(json.dumps(reply, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def _main(args: argparse.Namespace) -> None:
    kind = SotwClient if args.mode == "sotw" else DeltaClient
    options = {
        "node_profile": args.node_profile,
        "init_fetch_timeout": args.init_fetch_timeout,
        "node_on_first_request_only": args.node_first_only,
    }
    first = args.first_node
    clients: list[AdsClient] = [kind(f"node-{i}", args.cluster, **options) for i in range(first, first + args.nodes)]
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=16 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await Fleet(clients, args.xds, args.per_channel).serve(reader, _write)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry."""
    parser = argparse.ArgumentParser(prog="python -m bench.simfleet", description=__doc__.split("\n")[0])
    parser.add_argument("--xds", required=True, help="ADS server HOST:PORT")
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--mode", choices=("sotw", "delta"), default="sotw")
    parser.add_argument("--per-channel", type=int, default=100, help="streams per gRPC channel")
    parser.add_argument("--cluster", default="simfleet", help="node.cluster")
    parser.add_argument("--node-profile", choices=("envoy", "minimal"), default="envoy",
                        help="envoy: a 60 KB node on every request, as Envoy 1.40 sends; minimal: id and cluster")
    parser.add_argument("--node-first-only", action="store_true",
                        help="send the node only on a stream's first request (set_node_on_first_message_only)")
    parser.add_argument("--first-node", type=int, default=0, help="number of the first node (node-<first> ...)")
    parser.add_argument("--init-fetch-timeout", type=float, default=15.0, help="seconds before LDS without EDS")
    args = parser.parse_args(argv)
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
