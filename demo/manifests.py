"""The example manifests (examples/manifests, the README's Quick Demo) copied with the demo's ports.

The examples stay as users read them (egress on 9090, ingress on 10000, backends on 8080, the app on 10001); the demo
serves a copy whose two listeners use the ports of its block.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from .ports import Ports

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "manifests"
# (kind, name) of the examples' listeners -> the Ports fields for their listenport and targetport.
LISTENERS = {("EgressListener", "backends"): ("egress", "backends"), ("IngressListener", "app"): ("ingress", "app")}


class MissingListener(Exception):
    pass


def render(target: Path, ports: Ports, source: Path = EXAMPLES) -> Path:
    """Copy `source` to `target`, the examples' listeners moved to `ports`; everything else as it is."""
    shutil.copytree(source, target)
    found: set[tuple[str, str]] = set()
    for path in sorted(p for p in target.rglob("*") if p.suffix in (".yaml", ".yml")):
        docs = list(yaml.safe_load_all(path.read_text()))
        moved = False
        for doc in docs:
            key = _listener(doc)
            if key in LISTENERS:
                listen, targetport = LISTENERS[key]
                doc["spec"].update(listenport=getattr(ports, listen), targetport=getattr(ports, targetport))
                found.add(key)
                moved = True
        if moved:
            path.write_text(f"# {source / path.relative_to(target)} with the demo's ports\n"
                            + yaml.safe_dump_all(docs, sort_keys=False))
    if missing := sorted(LISTENERS.keys() - found):
        raise MissingListener(f"{source} has no {' and no '.join(f'{kind} {name!r}' for kind, name in missing)}"
                              " (the demo sends its traffic through them)")
    return target


def _listener(doc: object) -> tuple[str, str] | None:
    if isinstance(doc, dict) and isinstance(doc.get("spec"), dict) and isinstance(doc.get("metadata"), dict):
        return doc.get("kind"), doc["metadata"].get("name")
    return None
