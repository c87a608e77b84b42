"""The official Python client (`pip install kubernetes`) against a running `kelp server`.

usage: python3 client_test.py KUBECONFIG
"""
import sys

from kubernetes import client, config, watch

config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()
apps = client.AppsV1Api()

names = sorted(n.metadata.name for n in v1.list_namespace().items)
assert names == ["default", "kube-node-lease", "kube-public", "kube-system"], names

cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py", labels={"from": "python"}), data={"a": "1"})
created = v1.create_namespaced_config_map("default", cm)
assert created.metadata.resource_version and created.metadata.uid

got = v1.read_namespaced_config_map("py", "default")
assert got.data == {"a": "1"}, got.data
patched = v1.patch_namespaced_config_map("py", "default", {"data": {"b": "2"}})
assert patched.data == {"a": "1", "b": "2"}, patched.data

listed = v1.list_namespaced_config_map("default", label_selector="from=python")
assert [c.metadata.name for c in listed.items] == ["py"]

# Replacing from the stale copy read before the patch is a conflict.
got.data = {"c": "3"}
try:
    v1.replace_namespaced_config_map("py", "default", got)
    raise SystemExit("a stale replace succeeded")
except client.ApiException as e:
    assert e.status == 409, e

events = []
for ev in watch.Watch().stream(v1.list_namespaced_config_map, "default", label_selector="from=python", timeout_seconds=2):
    events.append((ev["type"], ev["object"].metadata.name))
assert events == [("ADDED", "py")], events

deployment = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}},
    },
}
apps.create_namespaced_deployment("default", deployment)
d = apps.read_namespaced_deployment("web", "default")
assert d.spec.replicas == 2 and d.metadata.generation == 1, d.metadata
assert d.spec.strategy.rolling_update.max_surge == "25%", d.spec.strategy

v1.delete_namespaced_config_map("py", "default")
try:
    v1.read_namespaced_config_map("py", "default")
    raise SystemExit("the deleted ConfigMap is still there")
except client.ApiException as e:
    assert e.status == 404, e
print("python client: ok")
