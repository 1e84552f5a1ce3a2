"""One contract, two doors: the in-memory door the unit tier drives rotations on
(``tests/memkube.py``) must behave as the real API server does through ``Kube`` where the
reconcilers depend on it. Every test runs on both."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client

from sigops.kube.api import Conflict, Kube, NotFound
from sigops.kube.door import KubeDoor
from sigops.testbed.manifests import backend_deployment
from tests.memkube import MemoryKube
from tests.support import GROUP, VERSION, keyrotation

pytestmark = pytest.mark.integration


@pytest.fixture(params=["memory", "api-server"])
def door(request: pytest.FixtureRequest) -> tuple[KubeDoor, str, Any]:
    """(the door, a namespace, a function creating a KeyRotation and a Deployment)."""
    if request.param == "memory":
        mem = MemoryKube()

        def make_mem(kind: str, body: dict[str, Any]) -> None:
            if kind == "deployment":
                mem.add_deployment("ns", body)
            else:
                mem.add_cr("ns", "keyrotations", body)

        return mem, "ns", make_mem
    api = request.getfixturevalue("api")
    ns = request.getfixturevalue("namespace")

    def make_real(kind: str, body: dict[str, Any]) -> None:
        if kind == "deployment":
            client.AppsV1Api(api).create_namespaced_deployment(ns, body)
        else:
            client.CustomObjectsApi(api).create_namespaced_custom_object(
                GROUP, VERSION, ns, "keyrotations", body)

    return Kube(api), ns, make_real


def test_missing_objects_read_as_none_and_delete_quietly(door):
    k, ns, _ = door
    assert k.read_secret(ns, "nope") is None
    assert k.secret_value(ns, "nope", "k") is None
    assert k.read_deployment(ns, "nope") is None
    assert k.get_cr(ns, "keyrotations", "nope") is None
    k.delete_secret(ns, "nope")
    with pytest.raises(NotFound):
        k.patch_status(ns, "keyrotations", "nope", {"phase": "Staged"})


def test_secrets_are_written_with_optimistic_concurrency(door):
    k, ns, _ = door
    first = k.write_secret(ns, "s", {"a": "1"}, None, labels={"l": "x"})
    with pytest.raises(Conflict):
        k.write_secret(ns, "s", {"a": "2"}, None)  # it exists: not a create
    assert k.secret_value(ns, "s", "a") == "1"
    second = k.write_secret(ns, "s", {"a": "2", "b": "3"}, k.read_secret(ns, "s"))
    assert second.metadata.resource_version != first.metadata.resource_version
    with pytest.raises(Conflict):
        k.write_secret(ns, "s", {"a": "stale"}, first)  # someone wrote in between
    sec = k.read_secret(ns, "s")
    assert sec is not None and sec.metadata.labels == {"l": "x"}  # kept when not given
    assert (k.secret_value(ns, "s", "a"), k.secret_value(ns, "s", "b")) == ("2", "3")
    k.delete_secret(ns, "s")
    assert k.read_secret(ns, "s") is None


def test_a_deployment_is_replaced_only_from_its_current_version(door):
    k, ns, make = door
    make("deployment", backend_deployment([{"name": "A", "value": "1"}]))
    for _ in range(10):  # the deployment controller writes status in between: read again
        dep = k.read_deployment(ns, "fractal-lba-backend")
        assert dep is not None
        gen = dep["metadata"]["generation"]
        dep["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "A", "value": "2"}]
        try:
            after = k.replace_deployment(ns, dep)
            break
        except Conflict:
            time.sleep(0.2)
    else:
        pytest.fail("no replace got through")
    assert after["metadata"]["generation"] == gen + 1
    dep["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "A", "value": "3"}]
    with pytest.raises(Conflict):
        k.replace_deployment(ns, dep)  # its resourceVersion is the one before
    now = k.read_deployment(ns, "fractal-lba-backend")
    assert now is not None
    assert now["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {"name": "A", "value": "2"}]


def test_a_status_patch_merges_into_status_and_leaves_the_spec(door):
    k, ns, make = door
    make("keyrotation", keyrotation("c", "hmac-sha256", overlap="1h"))
    k.patch_status(ns, "keyrotations", "c", {"phase": "Staged", "newKeyId": "k1",
                                             "conditions": [{"type": "Ready",
                                                             "status": "False"}]})
    k.patch_status(ns, "keyrotations", "c", {"phase": "Overlapping", "probeRounds": 1})
    k.patch_status(ns, "keyrotations", "c", {"newKeyId": None})
    obj = k.get_cr(ns, "keyrotations", "c")
    assert obj is not None
    st = obj["status"]
    assert st["phase"] == "Overlapping" and st["probeRounds"] == 1 and "newKeyId" not in st
    assert st["conditions"] == [{"type": "Ready", "status": "False"}]
    assert obj["spec"]["overlap"] == "1h" and obj["metadata"]["uid"]
    assert [o["metadata"]["name"] for o in k.list_cr(ns, "keyrotations")] == ["c"]
