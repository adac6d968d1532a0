"""The launch configs in cluster/configs/ are valid for the tools that consume them.

- the `ray up` config passes Ray's own check (the autoscaler's defaults filled in
  as `ray up` does, then the JSON schema Ray ships, ray-schema.json);
- the KubeRay manifests are well-formed Kubernetes objects: every pod template
  deserializes into the `kubernetes` client's ``V1PodTemplateSpec`` and serializes
  back to the same data (a misspelled field would be dropped and show up here),
  and each custom resource matches a minimal schema taken from KubeRay's v1 CRDs
  (the fields they require and the types of the ones used).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes.client import ApiClient, V1ObjectMeta

CONFIGS = Path(__file__).resolve().parents[1] / "cluster" / "configs"
RAY_UP = CONFIGS / "ray-up-aws-gpu.yaml"
KUBERAY = [CONFIGS / "kuberay-raycluster.yaml", CONFIGS / "kuberay-rayjob.yaml"]

_POD_GROUP = {
    "type": "object",
    "required": ["template"],
    "properties": {
        "rayStartParams": {"type": "object", "additionalProperties": {"type": "string"}},
        "template": {"type": "object", "required": ["spec"]},
        "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
    },
}
_WORKER_GROUP = {
    "type": "object",
    "required": ["groupName", "maxReplicas", "template"],
    "properties": {
        **_POD_GROUP["properties"],
        "groupName": {"type": "string", "minLength": 1},
        "replicas": {"type": "integer", "minimum": 0},
        "minReplicas": {"type": "integer", "minimum": 0},
        "maxReplicas": {"type": "integer", "minimum": 0},
    },
}
#: From KubeRay's ray.io/v1 CRDs: what RayClusterSpec and RayJobSpec require.
RAY_CLUSTER_SPEC = {
    "type": "object",
    "required": ["headGroupSpec"],
    "properties": {
        "rayVersion": {"type": "string"},
        "enableInTreeAutoscaling": {"type": "boolean"},
        "headGroupSpec": _POD_GROUP,
        "workerGroupSpecs": {"type": "array", "items": _WORKER_GROUP},
    },
}
SCHEMAS = {
    "RayCluster": RAY_CLUSTER_SPEC,
    "RayJob": {
        "type": "object",
        "required": ["entrypoint", "rayClusterSpec"],
        "properties": {
            "entrypoint": {"type": "string", "minLength": 1},
            "shutdownAfterJobFinishes": {"type": "boolean"},
            "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
            "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
            "rayClusterSpec": RAY_CLUSTER_SPEC,
        },
    },
}


def _deserialize(data: Any, klass: str) -> Any:
    # The client's public deserialize() wants an HTTP response; this is what it calls.
    return ApiClient()._ApiClient__deserialize(data, klass)  # type: ignore[attr-defined]


def _pod_templates(spec: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = spec.get("rayClusterSpec", spec)
    groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
    return [g["template"] for g in groups]


def test_ray_up_config_passes_rays_schema_check() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(RAY_UP.read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    assert config["available_node_types"]["gpu_worker"]["node_config"]["InstanceType"]
    for cmd in config["head_start_ray_commands"]:  # the job server stays on the node
        assert "--dashboard-host=0.0.0.0" not in cmd

    broken = copy.deepcopy(config)
    broken["available_node_types"]["gpu_worker"]["min_worker"] = 1  # misspelled
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        validate_config(prepare_config(broken))


@pytest.mark.parametrize("path", KUBERAY, ids=lambda p: p.name)
def test_kuberay_manifest_is_a_well_formed_kubernetes_object(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(docs) == 1
    (doc,) = docs
    assert doc["apiVersion"] == "ray.io/v1"
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    meta = _deserialize(doc["metadata"], "V1ObjectMeta")
    assert isinstance(meta, V1ObjectMeta) and meta.name
    jsonschema.validate(doc["spec"], SCHEMAS[doc["kind"]])
    client = ApiClient()
    for template in _pod_templates(doc["spec"]):
        pod = _deserialize(template, "V1PodTemplateSpec")
        assert client.sanitize_for_serialization(pod) == template  # no field dropped
        for c in pod.spec.containers:
            assert c.image and c.resources.limits


def test_a_misspelled_pod_field_is_caught() -> None:
    """The round trip above can fail: a typo in a container field is dropped."""
    doc = yaml.safe_load(KUBERAY[0].read_text())
    template = copy.deepcopy(doc["spec"]["headGroupSpec"]["template"])
    template["spec"]["containers"][0]["imagePullPolice"] = "Always"
    pod = _deserialize(template, "V1PodTemplateSpec")
    assert ApiClient().sanitize_for_serialization(pod) != template
