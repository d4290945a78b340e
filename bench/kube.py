"""The fan-out benchmark fed through Kubernetes (`python -m bench.fanout --source kubernetes`): the path users run.

The same topology, fleet and verification as the file-fed run (fanout.Run), but the control plane reads a Kubernetes
API server: the in-repo fake (`python -m tests.fakekube`), started as a process of its own so that its CPU is
measured apart from the control plane's (from /proc, as the control plane's is).

- Before the control plane starts, the topology's pods and IngressListener/EgressListener objects are put into the
  fake (the CRDs installed); the control plane lists them at start and then watches.
- A pod change is what a StatefulSet does to a pod that comes back with a new IP: the old pod is deleted and a pod
  of the same name is created with the new IP (Running and Ready: the steps in between, Pending and not Ready, give
  no endpoint). Two watch events, DELETED then ADDED, written by the API server in one go.
- The rollout replaces 10% of the pods as a Deployment does with surge: every new pod (new name, new IP) is created,
  then every old one deleted; all of them in one go.
- "event" is the moment the fake wrote the change's first watch event to the control plane's watch stream (the fake
  records it: tests/fakekube/benchapi.py); "write" is when the benchmark's request reached the fake.
- The control plane writes listener status back (status.write, on by default, as deployed): after the initial
  configuration the benchmark waits until every listener object in the fake says Programmed, so those writes are
  done before the pod changes are timed (`--no-status-write` turns the writer off).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from . import procs
from .fanout import Run, log_times, summary
from .procs import LogLine
from .runners import ControlPlane, HttpChild
from .topology import EGRESS_API, INGRESS_API, Pod, Topology

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = "bench"  # the control plane's name for the one Kubernetes cluster (the World's source name)
LOAD_CHUNK = 1000  # objects per batch request while loading (aiohttp's default body limit is 1 MB)
Json = dict[str, Any]


def pod_object(pod: Pod) -> Json:
    """The pod as the API server holds a running, Ready pod."""
    obj = pod.obj()
    obj["status"]["phase"] = "Running"
    return obj


class FakeKubeProcess(HttpChild):
    """`python -m tests.fakekube` as a child, with the calls the benchmark makes to it."""

    def __init__(self, workdir: Path) -> None:
        self.port = procs.free_port()
        self.kubeconfig = workdir / "fake.kubeconfig"
        self.log_path = workdir / "fakekube.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self._sent_next = 0

    def start(self) -> None:
        command = [sys.executable, "-m", "tests.fakekube", "--port", str(self.port), "--kubeconfig",
                   str(self.kubeconfig), "--install-crds", "--record-sent", "--bookmark-interval", "60"]  # fmt: skip
        self.proc = procs.spawn(command, self.log_path, cwd=ROOT)

    async def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"fake API server exited with {self.proc.returncode}; log: {self.log_path}")
            if "fake Kubernetes API server on" in self.log_path.read_text(errors="replace"):
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    await self._call("GET", "/fakekube/stats")
                    return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"fake API server not up after {timeout} s; log: {self.log_path}")

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body)
        async with self.session().request(method, self.url + path, data=data) as response:
            text = await response.text()
            if response.status != 200:
                raise RuntimeError(f"fake API server: {method} {path}: HTTP {response.status}: {text[:300]}")
            return json.loads(text)

    async def batch(self, ops: list[Json]) -> Json:
        """Apply the ops in one go; the reply has first_revision, last_revision, t_start, t_end (monotonic)."""
        return await self._call("POST", "/fakekube/batch", {"ops": ops})

    async def load(self, objects: list[Json]) -> None:
        for start in range(0, len(objects), LOAD_CHUNK):
            await self.batch([{"op": "upsert", "object": obj} for obj in objects[start : start + LOAD_CHUNK]])

    async def sent(self) -> list[Json]:
        """The watch events written since the last call (each with its monotonic time `t` and `revision`)."""
        reply = await self._call("GET", f"/fakekube/sent?after={self._sent_next}")
        self._sent_next = reply["next"]
        return reply["events"]

    async def stats(self) -> Json:
        return await self._call("GET", "/fakekube/stats")

    async def listeners(self) -> list[Json]:
        """Every IngressListener and EgressListener, as the API lists them."""
        items = []
        for api, plural in ((INGRESS_API, "ingresslisteners"), (EGRESS_API, "egresslisteners")):
            items += (await self._call("GET", f"/apis/{api}/{plural}"))["items"]
        return items

class KubeControlPlane(ControlPlane):
    """Ours, reading the fake through a kubeconfig (`clusters:` in its config file) instead of manifests."""

    def __init__(self, workdir: Path, kube: FakeKubeProcess, debounce_ms: int | None, status_write: bool) -> None:
        super().__init__(workdir, workdir / "no-manifests", debounce_ms)
        config = yaml.safe_load(self.config_path.read_text())
        del config["manifests"]
        config["clusters"] = [{"name": CLUSTER, "kubeconfig": str(kube.kubeconfig)}]
        config["status"] = {"write": status_write}
        self.config_text = yaml.safe_dump(config, sort_keys=False)

    def start(self) -> None:
        # The kubeconfig exists once the fake is up: the config is written now (the control plane checks the path).
        self.config_path.write_text(self.config_text)
        super().start()


def programmed(listener: Json) -> bool:
    conditions = (listener.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Programmed" and c.get("status") == "True" for c in conditions)


def event_times(lines: list[LogLine], sent: list[Json], reply: Json, pod_names: set[str]) -> Json:
    """When the change's watch events left the fake (`event`: the first; `last_sent`), and when the control plane
    logged the first of them (`cp_event`) and its last snapshot rebuilt."""
    ours = [e["t"] for e in sent if reply["first_revision"] <= e["revision"] <= reply["last_revision"]]
    times = log_times(lines, reply["t_start"], pod_names)
    out: Json = {k: v for k, v in times.items() if k in ("last_snapshot", "pushes_logged")}
    if "event" in times:
        out["cp_event"] = times["event"]
    if ours:
        out["event"], out["last_sent"], out["events_sent"] = min(ours), max(ours), len(ours)
    return out


def pod_change_ops(removed: list[Pod], added: list[Pod]) -> list[Json]:
    """Deletions first when a name comes back (a StatefulSet's pod), else creations first (a surge rollout)."""
    deletes = [{"op": "delete", "kind": "Pod", "namespace": "default", "name": p.name} for p in removed]
    creates = [{"op": "upsert", "object": pod_object(p)} for p in added]
    if {p.name for p in removed} & {p.name for p in added}:
        return deletes + creates
    return creates + deletes


def all_objects(topology: Topology) -> list[Json]:
    objects = [pod_object(p) for p in topology.pod_list]
    return objects + [obj for i in range(topology.nodes) for obj in topology.listener_objs(i)]


class KubeRun(Run):
    """fanout.Run with the control plane reading the fake API server; see the module's docstring."""

    phases = ("startup", "initial", "status", "pod_changes", "rollout")

    def control_plane(self) -> ControlPlane:
        self.kube = FakeKubeProcess(self.workdir)
        return KubeControlPlane(self.workdir, self.kube, self.args.debounce_ms, self.args.status_write)

    async def execute(self) -> Json:
        try:
            result = await super().execute()
        finally:
            with contextlib.suppress(Exception):
                self.kube_total = self.kube.usage()
            await self.kube.stop()
        return result

    async def startup(self) -> None:
        self.result["source"] = "kubernetes (tests/fakekube, a process of its own)"
        started = time.monotonic()
        self.kube.start()
        await self.kube.wait_ready(self.args.timeout)
        up = self.kube.usage()
        objects = all_objects(self.topology)
        await self.kube.load(objects)
        loaded = self.kube.usage()
        self.result["apiserver"] = {
            "objects_loaded": len(objects),
            "load_s": round(time.monotonic() - started, 3),
            "start_cpu_s": round(up.cpu, 3),
            "load_cpu_s": round(loaded.cpu - up.cpu, 3),
        }
        await super().startup()
        self.result["startup"]["note"] = "spawn to /readyz: imports, listing every object from the API server, " \
                                         "building every node's snapshot"
        self.result["apiserver"]["cp_startup_cpu_s"] = round(self.kube.usage().cpu - loaded.cpu, 3)

    async def initial(self) -> None:
        before = self.kube.usage()
        await super().initial()
        self.result["apiserver"]["initial_cpu_s"] = round(self.kube.usage().cpu - before.cpu, 3)

    async def status(self) -> None:
        """Wait until the control plane has written every listener's status (Programmed), as a cluster in steady
        state has it; the pod changes are timed after that."""
        if not self.args.status_write:
            return
        started, before = time.monotonic(), self.kube.usage()
        cp_before, requests_before = self.cp.usage(), await self.kube.stats()
        deadline = started + max(self.args.timeout, 60)
        while True:
            listeners = await self.kube.listeners()
            pending = [obj["metadata"]["name"] for obj in listeners if not programmed(obj)]
            if not pending:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"listener status: {len(pending)} not Programmed, e.g. {pending[:3]}")
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.5)  # the writer's next round (interval_s 1) finds nothing more to write
        stats = await self.kube.stats()
        self.result["status"] = {
            "seconds_after_initial": round(time.monotonic() - started, 3),
            "listeners_programmed": len(listeners),
            "patches": stats["by_method"].get("PATCH", 0) - requests_before["by_method"].get("PATCH", 0),
            "cpu_s": round(self.cp.usage().cpu - cp_before.cpu, 3),
            "apiserver_cpu_s": round(self.kube.usage().cpu - before.cpu, 3),
        }
        self.log.skip()
        await self.kube.sent()  # forget the status writes' events

    async def write(self, clusters: set[str], removed: list[Pod], added: list[Pod]) -> float:
        self._kube_before = self.kube.usage()
        self._reply = await self.kube.batch(pod_change_ops(removed, added))
        return self._reply["t_start"]

    async def change_times(self, lines: list[LogLine], written: float, pods: list[str]) -> Json:
        # The fleet has every ACK by now; the fake recorded its sends before the control plane could see them.
        self._times = event_times(lines, await self.kube.sent(), self._reply, set(pods))
        self._kube_after = self.kube.usage()
        return {k: v for k, v in self._times.items() if k != "cp_event"}

    async def _change(
        self, pods: list[str], clusters: set[str], timeout: float, removed: list[Pod], added: list[Pod]
    ) -> Json:
        out = await super()._change(pods, clusters, timeout, removed, added)
        times = getattr(self, "_times", {})
        out["apiserver_cpu_s"] = self._kube_after.cpu - self._kube_before.cpu
        out["events_sent"] = times.get("events_sent", 0)
        if "event" in times:
            out["write_to_sent_s"] = times["event"] - self._reply["t_start"]
            out["sent_span_s"] = times["last_sent"] - times["event"]
            if "cp_event" in times:
                out["sent_to_cp_event_s"] = times["cp_event"] - times["event"]
        self._times = {}
        return out

    async def pod_changes(self) -> None:
        await super().pod_changes()
        change = self.result["pod_change"]
        samples = [s for s in change["samples"] if s["ok"]]
        for key in ("write_to_sent_s", "sent_to_cp_event_s", "apiserver_cpu_s"):
            change[key] = summary([s[key] for s in samples if key in s])
        change["note"] = ("a pod deleted and created again under its name with a new IP (DELETED, ADDED); event: "
                          "the fake API server wrote the first of them to the watch; write: the batch reached it")

    def totals(self) -> None:
        super().totals()
        if "status" in self.result:  # the one-off status writes, for comparison with the file-fed run
            plane = self.result["control_plane"]
            plane["cpu_s_without_status_phase"] = round(plane["cpu_s_total"] - self.result["status"]["cpu_s"], 3)
        self.result["apiserver"]["cpu_s_total"] = round(self.kube.usage().cpu, 3)
        self.result["apiserver"]["peak_rss_mb"] = round(self.kube.usage().hwm_mb, 1)
