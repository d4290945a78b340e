"""The fake API server, checked through the real kubernetes_asyncio client (and the parts kubectl relies on)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from .selectors import field_selector, label_selector
from .server import FakeKube
from .status import ApiError

pytestmark = pytest.mark.timeout(20)

IL = ("ingresslistener.envoy.uw.systems", "v1alpha1")


def pod(name: str, namespace: str = "default", labels: dict | None = None, **spec: object) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {"containers": [{"name": "app", "image": "alpine"}], **spec},
    }


def ingress_listener(name: str, port: int = 8080) -> dict:
    return {
        "apiVersion": "/".join(IL), "kind": "IngressListener", "metadata": {"name": name},
        "spec": {"nodename": "test-node", "listenport": port, "targetport": 8081},
    }


@pytest.fixture
async def kube() -> AsyncIterator[FakeKube]:
    async with FakeKube(bookmark_interval=0.05) as kube:
        yield kube


@pytest.fixture
async def api(kube: FakeKube, tmp_path: Path) -> AsyncIterator[client.ApiClient]:
    path = kube.write_kubeconfig(tmp_path / "kubeconfig", context_name="east")
    async with await config.new_client_from_config(config_file=str(path), context="east") as api_client:
        yield api_client


async def next_events(stream: watch.Watch, count: int) -> list[dict]:
    return [await asyncio.wait_for(stream.__anext__(), 5) for _ in range(count)]


async def test_discovery_documents_name_the_served_types(api: client.ApiClient) -> None:
    core = await client.CoreV1Api(api).get_api_resources()
    assert [(r.name, r.kind, r.namespaced) for r in core.resources] == [
        ("pods", "Pod", True), ("secrets", "Secret", True), ("events", "Event", True)
    ]
    assert "watch" in core.resources[0].verbs
    groups = await client.ApisApi(api).get_api_versions()
    assert {g.name for g in groups.groups} == {
        "ingresslistener.envoy.uw.systems", "egresslistener.envoy.uw.systems", "apiextensions.k8s.io",
        "coordination.k8s.io"}
    listeners = await client.CustomObjectsApi(api).get_api_resources(*IL)
    assert [r.name for r in listeners.resources] == ["ingresslisteners", "ingresslisteners/status"]
    assert (await client.VersionApi(api).get_code()).major == "1"


async def test_create_get_list_and_metadata(kube: FakeKube, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    created = await core.create_namespaced_pod("default", pod("a"))
    assert created.metadata.uid and created.metadata.creation_timestamp and created.metadata.generation == 1
    assert created.status.phase == "Pending"
    kube.upsert(pod("b", namespace="other"))
    listed = await core.list_pod_for_all_namespaces()
    assert [(p.metadata.namespace, p.metadata.name) for p in listed.items] == [("default", "a"), ("other", "b")]
    assert int(listed.metadata.resource_version) == 2  # one bump per write
    fetched = await core.read_namespaced_pod("a", "default")
    assert fetched.metadata.resource_version == created.metadata.resource_version == "1"


async def test_errors_are_status_objects(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    with pytest.raises(ApiException) as missing:
        await core.read_namespaced_pod("nope", "default")
    assert missing.value.status == 404 and '"reason": "NotFound"' in missing.value.body
    await core.create_namespaced_pod("default", pod("a"))
    with pytest.raises(ApiException) as duplicate:
        await core.create_namespaced_pod("default", pod("a"))
    assert duplicate.value.status == 409 and '"reason": "AlreadyExists"' in duplicate.value.body


async def test_replace_with_a_stale_version_conflicts(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    first = (await core.create_namespaced_pod("default", pod("a"))).to_dict()
    body = {**pod("a"), "metadata": {"name": "a", "resourceVersion": first["metadata"]["resource_version"]}}
    body["spec"]["nodeName"] = "n1"
    replaced = await core.replace_namespaced_pod("a", "default", body)
    assert replaced.metadata.generation == 2
    with pytest.raises(ApiException) as stale:
        await core.replace_namespaced_pod("a", "default", body)
    assert stale.value.status == 409 and '"reason": "Conflict"' in stale.value.body


async def test_label_and_field_selectors_filter_lists(kube: FakeKube, api: client.ApiClient) -> None:
    kube.upsert(pod("a", labels={"app": "web", "tier": "front"}, nodeName="n1"))
    kube.upsert(pod("b", labels={"app": "db"}, nodeName="n2"))
    kube.upsert({**pod("c"), "status": {"phase": "Running"}})
    core = client.CoreV1Api(api)

    async def names(**selectors: str) -> list[str]:
        return [p.metadata.name for p in (await core.list_namespaced_pod("default", **selectors)).items]

    assert await names(label_selector="app in (web, db),!tier") == ["b"]
    assert await names(label_selector="app!=web") == ["b", "c"]
    assert await names(field_selector="spec.nodeName=n2") == ["b"]
    assert await names(field_selector="status.phase=Running,metadata.name!=x") == ["c"]
    with pytest.raises(ApiException) as bad:
        await names(field_selector="spec.unknown=1")
    assert bad.value.status == 400


@pytest.mark.parametrize(("selector", "labels", "expected"), [
    ("app=web", {"app": "web"}, True),
    ("app==web", {"app": "db"}, False),
    ("app!=web", {}, True),
    ("app in (web,db)", {"app": "db"}, True),
    ("app notin (web,db)", {}, True),
    ("app notin (web,db)", {"app": "web"}, False),
    ("app", {"app": ""}, True),
    ("!app", {"app": "web"}, False),
    ("example.com/role=x, app", {"example.com/role": "x", "app": "y"}, True),
    ("", {}, True),
])
def test_label_selector_operators(selector: str, labels: dict, expected: bool) -> None:
    assert label_selector(selector)({"metadata": {"labels": labels}}) is expected


def test_selectors_reject_what_the_real_server_rejects() -> None:
    with pytest.raises(ApiError):
        label_selector("app in web")
    with pytest.raises(ApiError):
        field_selector("metadata.labels=x", ("metadata.name",))


async def test_watch_from_a_list_version_streams_changes_and_bookmarks(kube: FakeKube, api: client.ApiClient) -> None:
    kube.upsert(pod("before"))
    core = client.CoreV1Api(api)
    listed = await core.list_namespaced_pod("default")
    async with watch.Watch() as stream:
        events = stream.stream(
            core.list_namespaced_pod, "default", label_selector="app=web",
            resource_version=listed.metadata.resource_version, allow_watch_bookmarks=True, timeout_seconds=10,
        )
        kube.upsert(pod("other", labels={"app": "db"}))  # filtered out by the selector
        kube.upsert(pod("web", labels={"app": "web"}))
        added = (await next_events(events, 1))[0]
        assert (added["type"], added["object"].metadata.name) == ("ADDED", "web")
        kube.set_pod_ready("default", "web", True)
        modified = (await next_events(events, 1))[0]
        assert modified["type"] == "MODIFIED"
        assert [(c.type, c.status) for c in modified["object"].status.conditions] == [("Ready", "True")]
        bookmark = (await next_events(events, 1))[0]
        assert bookmark["type"] == "BOOKMARK"
        assert bookmark["raw_object"]["metadata"]["resourceVersion"] == str(kube.store.revision)
        kube.delete("Pod", "default", "web")
        deleted = (await next_events(events, 1))[0]
        assert (deleted["type"], deleted["object"].metadata.name) == ("DELETED", "web")


async def test_watch_replays_retained_events_after_the_given_version(kube: FakeKube, api: client.ApiClient) -> None:
    first = kube.upsert(pod("a"))
    kube.upsert(pod("b"))
    kube.delete("Pod", "default", "a")
    async with watch.Watch() as stream:
        events = stream.stream(
            client.CoreV1Api(api).list_namespaced_pod, "default",
            resource_version=first["metadata"]["resourceVersion"], timeout_seconds=10,
        )
        replayed = await next_events(events, 2)
    assert [(e["type"], e["object"].metadata.name) for e in replayed] == [("ADDED", "b"), ("DELETED", "a")]


async def test_watch_without_a_version_starts_with_the_current_objects(kube: FakeKube, api: client.ApiClient) -> None:
    kube.upsert(pod("a"))
    async with watch.Watch() as stream:
        events = stream.stream(client.CoreV1Api(api).list_namespaced_pod, "default", timeout_seconds=10)
        assert [(e["type"], e["object"].metadata.name) for e in await next_events(events, 1)] == [("ADDED", "a")]


async def test_watch_from_a_compacted_version_is_410_expired(kube: FakeKube, api: client.ApiClient) -> None:
    old = kube.upsert(pod("a"))["metadata"]["resourceVersion"]
    kube.upsert(pod("b"))
    kube.compact()
    async with watch.Watch() as stream:
        events = stream.stream(client.CoreV1Api(api).list_namespaced_pod, "default",
                               resource_version=old, timeout_seconds=10)
        with pytest.raises(ApiException) as expired:
            await next_events(events, 1)
    assert expired.value.status == 410 and "too old resource version: 1 (3)" in expired.value.reason


async def test_410_arrives_as_the_first_event_of_a_200_stream(kube: FakeKube) -> None:
    old = kube.upsert(pod("a"))["metadata"]["resourceVersion"]
    kube.upsert(pod("b"))
    kube.compact()
    async with aiohttp.ClientSession() as session:
        params = {"watch": "1", "resourceVersion": old}
        async with session.get(f"{kube.url}/api/v1/pods", params=params) as response:
            assert response.status == 200
            event = await response.json(content_type=None)
    assert event == {"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "too old resource version: 1 (3)", "reason": "Expired", "code": 410,
    }}


async def test_timeout_seconds_ends_the_stream(api: client.ApiClient) -> None:
    async with watch.Watch() as stream:
        events = stream.stream(client.CoreV1Api(api).list_namespaced_pod, "default", timeout_seconds=1)
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(events.__anext__(), 5)


async def test_dropped_watches_break_the_connection(kube: FakeKube, api: client.ApiClient) -> None:
    async with watch.Watch() as stream:
        events = stream.stream(client.CoreV1Api(api).list_namespaced_pod, "default", timeout_seconds=10)
        pending = asyncio.ensure_future(events.__anext__())
        await asyncio.sleep(0.1)  # let the request reach the server
        kube.drop_watches()
        with pytest.raises(aiohttp.ClientError):
            await asyncio.wait_for(pending, 5)


async def test_held_pods_stay_terminating_until_finished(kube: FakeKube, api: client.ApiClient) -> None:
    kube.upsert(pod("a"))
    kube.hold_terminating()
    core = client.CoreV1Api(api)
    async with watch.Watch() as stream:
        events = stream.stream(core.list_namespaced_pod, "default", resource_version=str(kube.store.revision),
                               timeout_seconds=10)
        deleted = await core.delete_namespaced_pod("a", "default", grace_period_seconds=5)
        assert deleted.metadata.deletion_timestamp is not None
        assert deleted.metadata.deletion_grace_period_seconds == 5
        terminating = (await next_events(events, 1))[0]
        assert terminating["type"] == "MODIFIED" and terminating["object"].metadata.deletion_timestamp
        kube.finish_termination()
        gone = (await next_events(events, 1))[0]
        assert gone["type"] == "DELETED"
    assert (await core.list_namespaced_pod("default")).items == []


async def test_fail_next_fails_that_many_requests(kube: FakeKube, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    kube.fail_next(2, status=503)
    for _ in range(2):
        with pytest.raises(ApiException) as failed:
            await core.list_namespaced_pod("default")
        assert failed.value.status == 503
    assert (await core.list_namespaced_pod("default")).items == []


async def test_restart_keeps_data_and_port(kube: FakeKube, api: client.ApiClient) -> None:
    kube.upsert(pod("a"))
    port = kube.port
    await kube.stop()
    with pytest.raises(aiohttp.ClientError):
        await client.CoreV1Api(api).list_namespaced_pod("default")
    await kube.start()
    assert kube.port == port
    assert [p.metadata.name for p in (await client.CoreV1Api(api).list_namespaced_pod("default")).items] == ["a"]


async def test_custom_objects_round_trip(kube: FakeKube, api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    created = await custom.create_namespaced_custom_object(*IL, "default", "ingresslisteners", ingress_listener("l1"))
    assert created["metadata"]["namespace"] == "default"
    patched = await custom.patch_namespaced_custom_object(
        *IL, "default", "ingresslisteners", "l1", {"spec": {"listenport": 9000}},
        _content_type="application/merge-patch+json",
    )
    assert patched["spec"] == {"nodename": "test-node", "listenport": 9000, "targetport": 8081}
    assert patched["metadata"]["generation"] == 2
    listed = await custom.list_namespaced_custom_object(*IL, "default", "ingresslisteners")
    assert listed["kind"] == "IngressListenerList" and [i["metadata"]["name"] for i in listed["items"]] == ["l1"]
    await custom.delete_namespaced_custom_object(*IL, "default", "ingresslisteners", "l1")
    with pytest.raises(ApiException) as missing:
        await custom.get_namespaced_custom_object(*IL, "default", "ingresslisteners", "l1")
    assert missing.value.status == 404 and "ingresslisteners.ingresslistener.envoy.uw.systems" in missing.value.body


async def test_custom_object_watch(kube: FakeKube, api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    async with watch.Watch() as stream:
        events = stream.stream(custom.list_cluster_custom_object, *IL, "ingresslisteners",
                               resource_version="0", timeout_seconds=10)
        kube.upsert(ingress_listener("l1"))
        added = (await next_events(events, 1))[0]
    assert added["type"] == "ADDED" and added["object"]["spec"]["listenport"] == 8080


async def test_patches_as_kubectl_sends_them(kube: FakeKube) -> None:
    """Strategic merge patches with `$` directives and lists merged by name, and server-side apply."""
    kube.upsert(pod("a"))
    url = f"{kube.url}/api/v1/namespaces/default/pods/a"
    strategic = {
        "$setElementOrder/containers": [{"name": "app"}],
        "metadata": {"labels": {"x": "y"}},
        "spec": {"containers": [{"name": "app", "image": "alpine:2"}]},
    }
    async with aiohttp.ClientSession() as session:
        headers = {"Content-Type": "application/strategic-merge-patch+json"}
        async with session.patch(url, json=strategic, headers=headers) as response:
            assert response.status == 200
        apply_body = "apiVersion: v1\nkind: Pod\nmetadata: {name: new}\nspec: {containers: [{name: c, image: i}]}\n"
        headers = {"Content-Type": "application/apply-patch+yaml"}
        async with session.patch(url.removesuffix("/a") + "/new", data=apply_body, headers=headers) as response:
            assert response.status == 200
        async with session.patch(url, json=[], headers={"Content-Type": "application/json-patch+json"}) as response:
            assert response.status == 415
    patched = kube.get("Pod", "default", "a")
    assert patched["spec"]["containers"] == [{"name": "app", "image": "alpine:2"}]
    assert patched["metadata"]["labels"] == {"x": "y"} and "$setElementOrder/containers" not in patched
    assert kube.get("Pod", "default", "new")["spec"]["containers"] == [{"name": "c", "image": "i"}]


async def test_written_kubeconfig_is_plain_http_with_the_given_context(kube: FakeKube, tmp_path: Path) -> None:
    path = kube.write_kubeconfig(tmp_path / "kc", context_name="west", namespace="ns1")
    _, active = config.list_kube_config_contexts(str(path))
    assert active["name"] == "west" and active["context"]["namespace"] == "ns1"
    assert f"server: {kube.url}" in path.read_text()


async def test_lists_page_with_limit_and_continue(kube: FakeKube) -> None:
    for name in "abc":
        kube.upsert(pod(name))
    names, token = [], ""
    async with aiohttp.ClientSession() as session:
        while True:
            params = {"limit": "2", **({"continue": token} if token else {})}
            async with session.get(f"{kube.url}/api/v1/namespaces/default/pods", params=params) as response:
                page = await response.json()
            names += [item["metadata"]["name"] for item in page["items"]]
            assert all("kind" not in item for item in page["items"])  # as the real server lists core objects
            token = page["metadata"].get("continue", "")
            if not token:
                break
    assert names == ["a", "b", "c"]


async def test_watch_sees_objects_enter_and_leave_its_selector(kube: FakeKube, api: client.ApiClient) -> None:
    kube.upsert(pod("a"))
    async with watch.Watch() as stream:
        events = stream.stream(client.CoreV1Api(api).list_namespaced_pod, "default",
                               field_selector="status.phase!=Succeeded", resource_version="1", timeout_seconds=10)
        kube.upsert({**pod("a"), "status": {"phase": "Succeeded"}})
        kube.upsert({**pod("a"), "status": {"phase": "Running"}})
        seen = await next_events(events, 2)
    assert [(e["type"], e["object"].status.phase) for e in seen] == [("DELETED", "Pending"), ("ADDED", "Running")]
    assert seen[0]["object"].metadata.resource_version == "2"
