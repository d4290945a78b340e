"""envoy-control-plane run | bootstrap | validate."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

import yaml

from . import __version__, bootstrap, logs
from .config import Config, ConfigError, build_config, load_config
from .logs import LEVELS
from .model import ANNOTATION_KEY, CLUSTER_NAME_ANNOTATION
from .sources.forked_parse import ForkedParse
from .text import quote

EXIT_USAGE = 2

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return int(args.func(args) or 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="envoy-control-plane", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the control plane")
    run.add_argument("--config", type=Path, help="config file (YAML or JSON; the original config.json list loads too)")
    run.add_argument("--manifests", type=Path, action="append", help="manifest file or directory (repeatable)")
    run.add_argument("--xds-port", type=int, help="override xds.port")
    run.add_argument("--admin-port", type=int, help="override admin.port")
    run.add_argument("--log-level", type=str.upper, choices=LEVELS, help="override log_level (any case)")
    run.add_argument("--log-format", choices=["text", "json"], help="override log_format")
    run.add_argument("--cluster-name-annotation", metavar="KEY",
                     help="override cluster_name_annotation (the pod annotation naming its Envoy cluster)")
    run.set_defaults(func=_run)

    boot = sub.add_parser("bootstrap", help="print an Envoy bootstrap pointing at this control plane")
    boot.add_argument("--node-id", required=True, help="the Envoy's node id (listeners' spec.nodename)")
    boot.add_argument(
        "--xds", action="append", metavar="HOST:PORT",
        help="the control plane's xDS address (default 127.0.0.1:18000); repeat it for replicas",
    )
    boot.add_argument("--admin-port", type=int, default=9901, help="Envoy's admin port, on 127.0.0.1")
    boot.add_argument("--delta", action="store_true", help="use incremental xDS (DELTA_GRPC)")
    boot.add_argument("--format", choices=["yaml", "json"], default="yaml")
    tls = boot.add_argument_group("mTLS to the control plane (all three, or none; paths as Envoy will see them)")
    tls.add_argument("--xds-ca", metavar="FILE", help="CA that signed the control plane's certificate")
    tls.add_argument("--xds-cert", metavar="FILE", help="this node's client certificate (names its node id)")
    tls.add_argument("--xds-key", metavar="FILE", help="the client certificate's private key")
    tls.add_argument(
        "--xds-sni",
        metavar="NAME",
        help="the name the control plane's certificate must carry, also sent as SNI (default: the --xds host)",
    )
    boot.set_defaults(func=_bootstrap)

    val = sub.add_parser("validate", help="check manifests and print every problem")
    val.add_argument("paths", type=Path, nargs="+", metavar="PATH")
    val.add_argument("--cluster-name-annotation", metavar="KEY", default=CLUSTER_NAME_ANNOTATION,
                     help=f"the pod annotation naming its Envoy cluster (default {CLUSTER_NAME_ANNOTATION})")
    val.set_defaults(func=_validate)
    return parser


def _fail(message: str) -> int:
    print(f"envoy-control-plane: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def resolve_config(args: argparse.Namespace) -> Config:
    """The config file (if any) with the command-line overrides applied."""
    config = load_config(args.config) if args.config else Config()
    raw = config.model_dump()
    if args.manifests:
        raw["manifests"] = args.manifests
    if args.xds_port is not None:
        raw["xds"]["port"] = args.xds_port
    if args.admin_port is not None:
        raw["admin"]["port"] = args.admin_port
    if args.log_level is not None:
        raw["log_level"] = args.log_level
    if args.log_format is not None:
        raw["log_format"] = args.log_format
    if args.cluster_name_annotation is not None:
        raw["cluster_name_annotation"] = args.cluster_name_annotation
    config = build_config(raw, source="command line")
    if not config.manifests and not config.clusters:
        raise ConfigError("nothing to serve: give --manifests PATH or a --config with manifests or clusters")
    return config


def _run(args: argparse.Namespace) -> int:
    try:
        config = resolve_config(args)
    except ConfigError as e:
        return _fail(str(e))
    logs.setup(config.log_level, config.log_format, config.library_log_level)
    # Parse the manifests on the other core while this process imports gRPC, the Envoy protos and aiohttp.
    forked = ForkedParse.start(config.manifests, config.cluster_name_annotation) if config.manifests else None
    try:
        asyncio.run(_serve(config, forked))
    except OSError as e:
        return _fail(str(e))
    return 0


async def _serve(config: Config, forked: ForkedParse | None = None) -> None:
    from .app import ControlPlane  # imported late: argument errors should not wait for the protobuf imports

    plane = ControlPlane(config, forked_parse=forked)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # A closing terminal or a habitual `kill -HUP` must not stop the control plane (and every Envoy's updates).
    loop.add_signal_handler(
        signal.SIGHUP, log.warning, "SIGHUP ignored: manifests reload when they change; restart to change the config"
    )
    await plane.start()
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await plane.stop()


def _bootstrap(args: argparse.Namespace) -> int:
    endpoints = []
    for value in args.xds or ["127.0.0.1:18000"]:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            return _fail(f"--xds: expected HOST:PORT, got {quote(value)}")
        endpoints.append((host.strip("[]"), int(port)))
    if not 1 <= args.admin_port <= 65535:
        return _fail(f"--admin-port: expected 1-65535, got {args.admin_port}")
    files = {"--xds-ca": args.xds_ca, "--xds-cert": args.xds_cert, "--xds-key": args.xds_key}
    if any(files.values()) and not all(files.values()):
        missing = ", ".join(flag for flag, value in files.items() if not value)
        return _fail(f"--xds-ca, --xds-cert and --xds-key come together: {missing} missing")
    if args.xds_sni is not None and not any(files.values()):
        return _fail("--xds-sni needs --xds-ca, --xds-cert and --xds-key")
    tls = bootstrap.XdsClientTls(args.xds_ca, args.xds_cert, args.xds_key, args.xds_sni) if args.xds_ca else None
    (host, port), *replicas = endpoints
    doc = bootstrap.render(args.node_id, host, port, args.admin_port, delta=args.delta, tls=tls, replicas=replicas)
    print(json.dumps(doc, indent=2) if args.format == "json" else yaml.safe_dump(doc, sort_keys=False), end="")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from .sources.manifests import validate

    if not ANNOTATION_KEY.fullmatch(args.cluster_name_annotation):
        return _fail(f"--cluster-name-annotation: not an annotation key (like example.com/name): "
                     f"{quote(args.cluster_name_annotation)}")
    found = validate(args.paths, args.cluster_name_annotation)
    for problem in found.problems:
        print(problem)
    for warning in found.warnings:
        print(f"warning: {warning}")
    summary = f"{found.count} objects, {len(found.problems)} problems"
    if found.warnings:
        summary += f", {len(found.warnings)} warnings"
    if found.skipped:
        kinds = ", ".join(f"{kind} x{n}" if n > 1 else kind for kind, n in sorted(found.skipped.items()))
        summary += f"; skipped {sum(found.skipped.values())} documents of kinds this control plane does not read: {kinds}"
    print(summary, file=sys.stderr)
    return 1 if found.problems else 0


if __name__ == "__main__":
    sys.exit(main())
