"""Validates the manifests of this directory, without a cluster.

Run with the Python of the kubernetes-validate venv that `cargo xtask setup`
makes (~/.cache/mvnet/k8s-validate/bin/python validate.py):

* the built-in kinds (DaemonSet) against the Kubernetes JSON schemas that
  kubernetes-validate ships, strictly (unknown fields are errors);
* the custom resources (Multus' NetworkAttachmentDefinition, the Prometheus
  operator's PodMonitor), which those schemas lack: their metadata against
  Kubernetes' ObjectMeta schema, their spec against the fields of their
  CRDs' openAPI schemas that these manifests use (transcribed below);
* that they fit together: the PodMonitor selects the DaemonSet's pods and
  scrapes the port `mvnet serve` listens on; the NetworkAttachmentDefinition
  chains mvnet-cni after the macvlan plugin.

With --conflist, prints the NetworkAttachmentDefinition's conflist (JSON),
which tests/host/kubernetes.rs then runs through the real plugins.
"""
import json
import pathlib
import sys

import jsonschema
import yaml
from kubernetes_validate import utils
from referencing import Registry, Resource

K8S_VERSION = "1.37.0"
HERE = pathlib.Path(__file__).resolve().parent
MANIFESTS = ["daemonset.yaml", "network-attachment.yaml", "podmonitor.yaml"]
DEFS = "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1."

# From the CRD of k8s.cni.cncf.io/v1 NetworkAttachmentDefinition (Multus).
NAD_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "k8s.cni.cncf.io/v1"},
        "kind": {"const": "NetworkAttachmentDefinition"},
        "metadata": {"$ref": DEFS + "ObjectMeta"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"config": {"type": "string"}},
        },
    },
}

# The fields used here, from the CRD of monitoring.coreos.com/v1 PodMonitor.
DURATION = "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
PODMONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": {"$ref": DEFS + "ObjectMeta"},
        "spec": {
            "type": "object",
            "required": ["selector"],
            "additionalProperties": False,
            "properties": {
                "selector": {"$ref": DEFS + "LabelSelector"},
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "podMetricsEndpoints": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": DURATION},
                        },
                    },
                },
            },
        },
    },
}


def fail(msg):
    print(f"FAIL {msg}")
    sys.exit(1)


def load():
    docs = {}
    for name in MANIFESTS:
        for doc in yaml.safe_load_all((HERE / name).read_text()):
            if doc:
                docs[doc["kind"]] = (name, doc)
    return docs


def validate_custom(name, doc, schema):
    defs = utils.schema_contents(
        f"kubernetes-json-schema/v{K8S_VERSION}-local-strict/_definitions.json", K8S_VERSION
    )
    registry = Resource.from_contents(defs) @ Registry()
    try:
        jsonschema.Draft202012Validator(schema, registry=registry).validate(doc)
    except jsonschema.ValidationError as e:
        fail(f"{name}: {'.'.join(map(str, e.path))}: {e.message}")
    print(f"ok: {name} ({doc['kind']}) against its CRD's schema and ObjectMeta")


def main():
    docs = load()
    for kind in ["DaemonSet", "NetworkAttachmentDefinition", "PodMonitor"]:
        if kind not in docs:
            fail(f"no {kind} in {', '.join(MANIFESTS)}")
    name, ds = docs["DaemonSet"]
    try:
        utils.validate(ds, K8S_VERSION, strict=True)
    except utils.ValidationError as e:
        fail(f"{name}: {'.'.join(map(str, e.path))}: {e.message}")
    print(f"ok: {name} (DaemonSet) against Kubernetes {K8S_VERSION}, strict")
    validate_custom(*docs["NetworkAttachmentDefinition"], NAD_SCHEMA)
    validate_custom(*docs["PodMonitor"], PODMONITOR_SCHEMA)

    # The PodMonitor scrapes the DaemonSet's `mvnet serve`.
    pm = docs["PodMonitor"][1]
    pod = ds["spec"]["template"]
    labels = pod["metadata"]["labels"]
    for k, v in pm["spec"]["selector"]["matchLabels"].items():
        if labels.get(k) != v:
            fail(f"the PodMonitor selects {k}={v}, which the DaemonSet's pods lack")
    if ds["metadata"]["namespace"] not in pm["spec"]["namespaceSelector"]["matchNames"]:
        fail("the PodMonitor does not look in the DaemonSet's namespace")
    serve = next(c for c in pod["spec"]["containers"] if c["command"][:2] == ["mvnet", "serve"])
    addr = serve["command"][serve["command"].index("--metrics-addr") + 1]
    ports = {p["name"]: p["containerPort"] for p in serve["ports"]}
    for ep in pm["spec"]["podMetricsEndpoints"]:
        if ep["port"] not in ports:
            fail(f"the PodMonitor scrapes port {ep['port']}, which the serve container does not name")
        if not addr.endswith(f":{ports[ep['port']]}"):
            fail(f"mvnet serve listens on {addr}, not on port {ports[ep['port']]}")
    print("ok: the PodMonitor selects the DaemonSet's pods and scrapes mvnet serve's port")

    # The conflist chains mvnet-cni after macvlan.
    nad = docs["NetworkAttachmentDefinition"][1]
    conflist = json.loads(nad["spec"]["config"])
    types = [p["type"] for p in conflist["plugins"]]
    if "mvnet-cni" not in types or "macvlan" not in types[: types.index("mvnet-cni")]:
        fail(f"the conflist's plugins are {types}: mvnet-cni must come after macvlan")
    if conflist["name"] != nad["metadata"]["name"]:
        fail("the conflist's name differs from the NetworkAttachmentDefinition's")
    print("ok: the NetworkAttachmentDefinition chains mvnet-cni after macvlan")
    if "--conflist" in sys.argv[1:]:
        print(json.dumps(conflist))


if __name__ == "__main__":
    main()
