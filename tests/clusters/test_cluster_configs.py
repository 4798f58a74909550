"""clusters/: every `ray up` config passes Ray's own validation (the steps `ray up` runs
before touching a cloud: merge with the provider's defaults, then the JSON schema), carries
token auth to every node and installs torch and raytda; the KubeRay manifest is a RayJob
with GPU workers."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

CLUSTERS = Path(__file__).resolve().parents[2] / "clusters"
RAY_UP = ("aws.yaml", "gcp.yaml", "onprem.yaml")


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTERS / name).read_text())


def prepared(cfg: dict) -> dict:
    pytest.importorskip("jsonschema")
    from ray.autoscaler._private.util import prepare_config, validate_config

    out = prepare_config(copy.deepcopy(cfg))
    validate_config(out)
    return out


@pytest.mark.parametrize("name", RAY_UP)
def test_ray_up_config_validates(name):
    cfg = prepared(load(name))
    assert cfg["head_node_type"] in cfg["available_node_types"]


@pytest.mark.parametrize("name", RAY_UP)
def test_ray_up_config_installs_raytda_and_uses_token_auth(name):
    cfg = load(name)
    setup = " ".join(cfg["setup_commands"])
    assert "torch" in setup and "raytda" in setup
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    for section in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in cfg[section] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts), section
    assert "export RAY_AUTH_MODE=token" in setup  # for drivers started by `ray submit`


@pytest.mark.parametrize("name", ("aws.yaml", "gcp.yaml"))
def test_cloud_configs_have_gpu_workers(name):
    cfg = load(name)
    gpu = [t for t, spec in cfg["available_node_types"].items()
           if t != cfg["head_node_type"] and spec["resources"].get("GPU", 0) >= 1]
    assert gpu


def test_validation_catches_a_broken_config():
    """Guard against a validator that accepts anything."""
    import jsonschema

    cfg = load("aws.yaml")
    cfg["available_node_types"]["gpu_worker"]["resources"]["GPU"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        prepared(cfg)
    cfg = load("aws.yaml")
    cfg["head_node_type"] = "no-such-type"
    with pytest.raises((ValueError, KeyError)):
        prepared(cfg)


def test_kuberay_rayjob_manifest():
    job = load("kuberay-rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert "raytda sweep" in spec["entrypoint"] or "experiments/" in spec["entrypoint"]
    cluster = spec["rayClusterSpec"]
    assert cluster["authOptions"]["mode"] == "token"
    assert tuple(int(x) for x in cluster["rayVersion"].split(".")[:2]) >= (2, 52)
    head = cluster["headGroupSpec"]
    assert "rayStartParams" in head and head["template"]["spec"]["containers"]
    workers = cluster["workerGroupSpecs"]
    assert workers and all("groupName" in w and "rayStartParams" in w for w in workers)
    limits = [c["resources"]["limits"]
              for w in workers for c in w["template"]["spec"]["containers"]]
    assert any(int(lim.get("nvidia.com/gpu", 0)) >= 1 for lim in limits)
