"""The fake API server's failure modes and stricter parts: tokens (401/403), throttling (429 + Retry-After), a watch
ahead of the server (504), restarts (410), paging from a snapshot with expiring continue tokens, CRD schema
validation (422), OpenAPI v3 discovery, and HTTPS with client certificates."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import yaml

from envoy_control_plane.sources.kubernetes.memfiles import memory_files

from .crds import REPO_CRDS
from .server import FakeKube

pytestmark = pytest.mark.timeout(20)

PODS = "/api/v1/namespaces/default/pods"
EGRESS = "/apis/egresslistener.envoy.uw.systems/v1alpha1/namespaces/default/egresslisteners"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "app"}]}}


def egress(name: str, **spec: Any) -> dict:
    return {"apiVersion": "egresslistener.envoy.uw.systems/v1alpha1", "kind": "EgressListener",
            "metadata": {"name": name},
            "spec": {"nodename": "n", "listenport": 9090, "targetport": 8080, "targetcluster": "c", **spec}}


@pytest.fixture
async def kube() -> AsyncIterator[FakeKube]:
    async with FakeKube(bookmark_interval=0.05) as kube:
        yield kube


async def call(kube: FakeKube, method: str, path: str, body: Any = None, token: str | None = "fake-token",
               content_type: str | None = None, **kwargs: Any) -> tuple[int, dict, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if content_type:
        headers["Content-Type"] = content_type
    async with aiohttp.ClientSession() as session, session.request(
        method, kube.url + path, json=body, headers=headers, **kwargs
    ) as response:
        text = await response.text()
        return response.status, dict(response.headers), json.loads(text) if text.strip() else None


async def test_tokens_401_403_and_only_the_current_one(kube: FakeKube) -> None:
    assert (await call(kube, "GET", PODS, token=None))[0] == 200  # no checks until required
    kube.auth.require("fake-token")
    status, _, body = await call(kube, "GET", PODS, token=None)
    assert (status, body["reason"]) == (401, "Unauthorized")
    assert (await call(kube, "GET", PODS, token="wrong"))[0] == 401
    assert (await call(kube, "GET", PODS))[0] == 200
    kube.auth.forbid("fake-token")
    status, _, body = await call(kube, "GET", PODS)
    assert (status, body["reason"]) == (403, "Forbidden")
    status, _, issued = await call(kube, "GET", "/fakekube/token?lifetime=60", token=None)
    assert status == 200 and "expirationTimestamp" in issued
    assert (await call(kube, "GET", PODS, token=issued["token"]))[0] == 200
    assert (await call(kube, "GET", PODS))[0] == 401  # issuing revoked the older tokens
    status, _, newer = await call(kube, "GET", "/fakekube/token?lifetime=0", token=None)
    assert (await call(kube, "GET", PODS, token=newer["token"]))[0] == 401  # expired at once
    assert kube.auth.refused == 5


async def test_throttling_answers_429_with_retry_after(kube: FakeKube) -> None:
    kube.throttle_next(1, retry_after=7)
    status, headers, body = await call(kube, "GET", PODS)
    assert (status, headers["Retry-After"], body["reason"]) == (429, "7", "TooManyRequests")
    assert body["details"]["retryAfterSeconds"] == 7
    assert (await call(kube, "GET", PODS))[0] == 200


async def test_a_watch_from_a_future_version_is_504_too_large(kube: FakeKube) -> None:
    kube.upsert(pod("a"))
    status, _, body = await call(kube, "GET", f"{PODS}?watch=true&resourceVersion=99")
    assert (status, body["reason"]) == (504, "Timeout")
    assert body["message"] == "Too large resource version: 99, current: 1"
    assert body["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"


async def test_restored_backups_go_back_in_time(kube: FakeKube) -> None:
    backup = kube.backup()
    kube.upsert(pod("a"))
    kube.upsert(pod("b"))
    kube.restore(backup)
    assert kube.store.revision == 0 and (await call(kube, "GET", PODS))[2]["items"] == []
    assert (await call(kube, "GET", f"{PODS}?watch=true&resourceVersion=2"))[0] == 504


async def test_a_restart_rebuilds_the_watch_cache_so_older_versions_get_410(kube: FakeKube) -> None:
    kube.upsert(pod("a"))
    kube.upsert(pod("b"))
    await kube.restart()
    # The current version still watches; an older one gets the 410 event of a 200 stream.
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{kube.url}{PODS}?watch=true&resourceVersion=1&timeoutSeconds=1") as response:
            first = json.loads(await response.content.readline())
        async with session.get(f"{kube.url}{PODS}?watch=true&resourceVersion=2&timeoutSeconds=1") as response:
            assert response.status == 200 and await response.content.readline() == b""
    assert first["type"] == "ERROR" and first["object"]["code"] == 410


async def test_pages_come_from_one_snapshot_and_continue_tokens_expire(kube: FakeKube) -> None:
    for name in "abcde":
        kube.upsert(pod(name))
    status, _, first = await call(kube, "GET", f"{PODS}?limit=2")
    assert [i["metadata"]["name"] for i in first["items"]] == ["a", "b"]
    token = first["metadata"]["continue"]
    kube.delete("Pod", "default", "c")  # written after the first page: the next pages do not see it
    kube.upsert(pod("f"))
    status, _, second = await call(kube, "GET", f"{PODS}?limit=2&continue={token}")
    assert [i["metadata"]["name"] for i in second["items"]] == ["c", "d"]
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"] == "5"
    assert second["metadata"]["remainingItemCount"] == 1
    kube.compact()  # etcd compaction: the snapshot's version is gone
    status, _, body = await call(kube, "GET", f"{PODS}?limit=2&continue={second['metadata']['continue']}")
    assert (status, body["reason"]) == (410, "Expired") and "continue parameter is too old" in body["message"]
    assert (await call(kube, "GET", f"{PODS}?limit=2&continue=garbage"))[0] == 400


async def test_custom_resources_are_validated_against_the_installed_crd(kube: FakeKube) -> None:
    assert (await call(kube, "POST", EGRESS, egress("before", listenport=0)))[0] == 201  # no CRD yet
    crd = yaml_doc("egresslistener.yaml")
    status, _, created = await call(kube, "POST", CRDS, crd)
    assert status == 201 and {c["type"] for c in created["status"]["conditions"]} >= {"Established"}
    status, _, body = await call(kube, "POST", EGRESS, egress("bad", listenport=0, targetport="x", nodename=None))
    assert (status, body["reason"]) == (422, "Invalid")
    assert body["message"].startswith('EgressListener.egresslistener.envoy.uw.systems "bad" is invalid: [')
    fields = {c["field"]: c["message"] for c in body["details"]["causes"]}
    assert fields == {
        "spec.listenport": "Invalid value: 0: spec.listenport in body should be greater than or equal to 1",
        "spec.targetport": 'Invalid value: "string": spec.targetport in body must be of type integer: "string"',
        "spec.nodename": 'Invalid value: "null": spec.nodename in body must be of type string: "null"',
    }
    status, _, body = await call(kube, "POST", EGRESS, {**egress("missing"), "spec": {"nodename": "n"}})
    assert status == 422 and {c["field"] for c in body["details"]["causes"]} == {
        "spec.listenport", "spec.targetport", "spec.targetcluster"}
    assert (await call(kube, "POST", EGRESS, egress("high", listenport=70000)))[0] == 422
    # Unknown fields: pruned, or refused under fieldValidation=Strict (what kubectl sends).
    status, _, stored = await call(kube, "POST", EGRESS, egress("ok", colour="blue"))
    assert status == 201 and "colour" not in stored["spec"]
    status, _, body = await call(kube, "POST", EGRESS + "?fieldValidation=Strict", egress("strict", colour="blue"))
    assert (status, body["message"]) == (400, 'strict decoding error: unknown field "spec.colour"')
    # Updates too: a merge patch that breaks the schema, and a replace.
    merge = "application/merge-patch+json"
    assert (await call(kube, "PATCH", f"{EGRESS}/ok", {"spec": {"targetport": -1}}, content_type=merge))[0] == 422
    assert (await call(kube, "PUT", f"{EGRESS}/ok", egress("ok", targetcluster="")))[0] == 422
    assert kube.get("EgressListener", "default", "ok")["spec"]["targetport"] == 8080
    # Test cues bypass admission, as objects stored before the schema was tightened.
    kube.upsert({**egress("cue", listenport=0), "metadata": {"name": "cue", "namespace": "default"}})


async def test_crds_are_cluster_scoped_objects(kube: FakeKube) -> None:
    crd = yaml_doc("ingresslistener.yaml")
    name = crd["metadata"]["name"]
    assert (await call(kube, "POST", CRDS, crd))[0] == 201
    assert (await call(kube, "POST", CRDS, crd))[0] == 409
    status, _, got = await call(kube, "GET", f"{CRDS}/{name}")
    assert status == 200 and got["spec"]["names"]["kind"] == "IngressListener"
    assert [c["metadata"]["name"] for c in (await call(kube, "GET", CRDS))[2]["items"]] == [name]
    namespaced = f"/apis/apiextensions.k8s.io/v1/namespaces/default/customresourcedefinitions/{name}"
    assert (await call(kube, "GET", namespaced))[0] == 404
    broken = {**crd, "metadata": {"name": "wrong.name"}}
    status, _, body = await call(kube, "POST", CRDS, broken)
    assert status == 422 and body["details"]["causes"][0]["field"] == "metadata.name"
    assert (await call(kube, "DELETE", f"{CRDS}/{name}"))[0] == 200


async def test_openapi_v3_names_each_kind_with_its_patch_parameters() -> None:
    async with FakeKube(install_crds=True) as kube:
        status, _, root = await call(kube, "GET", "/openapi/v3")
        assert status == 200 and set(root["paths"]) == {
            "api/v1", "apis/apiextensions.k8s.io/v1", "apis/egresslistener.envoy.uw.systems/v1alpha1",
            "apis/ingresslistener.envoy.uw.systems/v1alpha1", "apis/coordination.k8s.io/v1"}
        url = root["paths"]["apis/egresslistener.envoy.uw.systems/v1alpha1"]["serverRelativeURL"]
        status, _, doc = await call(kube, "GET", url)
        patch = doc["paths"][EGRESS.replace("/default/", "/{namespace}/") + "/{name}"]["patch"]
        assert patch["x-kubernetes-group-version-kind"]["kind"] == "EgressListener"
        assert "fieldValidation" in {p["name"] for p in patch["parameters"]}
        schema = doc["components"]["schemas"]["systems.uw.envoy.egresslistener.v1alpha1.EgressListener"]
        assert schema["properties"]["spec"]["properties"]["listenport"]["maximum"] == 65535
        assert (await call(kube, "GET", "/openapi/v3/apis/nothing.io/v1"))[0] == 404


async def test_https_with_client_certificates() -> None:
    async with FakeKube(tls=True) as kube:
        assert kube.tls is not None and kube.url.startswith("https://")
        kube.auth.require()  # no token is accepted
        with memory_files(kube.tls.client.cert, kube.tls.client.key) as (cert, key):
            trusted = ssl.create_default_context(cadata=kube.tls.ca.pem.decode())
            with_cert = ssl.create_default_context(cadata=kube.tls.ca.pem.decode())
            with_cert.load_cert_chain(cert, key)
        assert (await call(kube, "GET", PODS, ssl=trusted))[0] == 401
        assert (await call(kube, "GET", PODS, ssl=with_cert, token=None))[0] == 200
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await call(kube, "GET", PODS)  # the system's roots do not know the fake's CA


def yaml_doc(name: str) -> dict:
    return yaml.safe_load((REPO_CRDS / name).read_text())
