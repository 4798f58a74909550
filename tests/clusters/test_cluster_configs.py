"""clusters/: every `ray up` config passes Ray's own validation (the steps `ray up` runs
before touching a cloud: merge with the provider's defaults, Docker checks, then the JSON
schema), carries token auth and the data directory to every node, runs Ray's own pinned
image and installs torch and raytda; the KubeRay manifest is a RayJob with GPU workers on
the same image; pyproject's Ray floor is what the code needs."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTERS = REPO / "clusters"
RAY_UP = ("aws.yaml", "gcp.yaml", "onprem.yaml")
IMAGE = "rayproject/ray:2.60.0-py311-gpu"  # Ray's own GPU image: Ray 2.60.0, Python 3.11
# Ray 2.52.0 introduced token authentication (RAY_AUTH_MODE=token, `ray get-auth-token`),
# which the executor and every cluster config rely on; ray.tune.RunConfig is older.
RAY_FLOOR = (2, 52)


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


@pytest.mark.parametrize("name", RAY_UP)
def test_ray_up_config_runs_the_pinned_image_and_ships_the_data(name):
    cfg = prepared(load(name))
    assert cfg["docker"]["image"] == IMAGE
    assert not {"head_image", "worker_image"} & set(cfg["docker"]), "one image on every node"
    # The scripts' default data directory (~/raytda-data/<name>) exists on every node.
    assert cfg["file_mounts"]["~/raytda-data"] == "~/raytda-data"
    setup = " ".join(cfg["setup_commands"])
    assert '"ray[default,tune]==2.60.0"' in setup  # extras only: never a different Ray


def test_aws_ami_is_not_rays_stale_default():
    """`latest_dlami` (or no ImageId) makes Ray substitute its 2021 Ubuntu 18.04 DLAMI;
    run Ray's own AMI step and check it leaves ours alone."""
    pytest.importorskip("boto3")
    from ray.autoscaler._private.aws.config import DEFAULT_AMI, _check_ami

    cfg = prepared(load("aws.yaml"))
    before = {k: t["node_config"]["ImageId"] for k, t in cfg["available_node_types"].items()}
    _check_ami(cfg)
    after = {k: t["node_config"]["ImageId"] for k, t in cfg["available_node_types"].items()}
    assert after == before
    assert not set(after.values()) & set(DEFAULT_AMI.values())
    assert all("base-oss-nvidia-driver-gpu-ubuntu-22.04" in ami for ami in after.values())


def test_pyproject_ray_floor():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    ray_dep = next(d for d in deps if re.match(r"ray\b", d))
    floor = re.search(r">=\s*(\d+)\.(\d+)", ray_dep)
    assert floor and (int(floor[1]), int(floor[2])) == RAY_FLOOR, ray_dep
    import ray
    from ray.tune import RunConfig  # noqa: F401  (raytda.run.tune uses it)

    assert tuple(int(x) for x in ray.__version__.split(".")[:2]) >= RAY_FLOOR


def test_kuberay_image_is_the_pinned_ray_image():
    job = load("kuberay-rayjob.yaml")
    cluster = job["spec"]["rayClusterSpec"]
    dockerfile = (CLUSTERS / "Dockerfile").read_text()
    assert re.search(rf"^FROM {re.escape(IMAGE)}$", dockerfile, re.M)
    assert cluster["rayVersion"] == IMAGE.split(":")[1].split("-")[0]
    pods = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
    images = {c["image"] for g in pods for c in g["template"]["spec"]["containers"]}
    assert len(images) == 1 and not images.pop().endswith(":latest")
    envs = [{e["name"]: e["value"] for e in c.get("env", [])}
            for g in pods for c in g["template"]["spec"]["containers"]]
    assert all(e.get("RAYTDA_DATA", "").startswith("/data/") for e in envs)


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
    assert tuple(int(x) for x in cluster["rayVersion"].split(".")[:2]) >= RAY_FLOOR
    head = cluster["headGroupSpec"]
    assert "rayStartParams" in head and head["template"]["spec"]["containers"]
    workers = cluster["workerGroupSpecs"]
    assert workers and all("groupName" in w and "rayStartParams" in w for w in workers)
    limits = [c["resources"]["limits"]
              for w in workers for c in w["template"]["spec"]["containers"]]
    assert any(int(lim.get("nvidia.com/gpu", 0)) >= 1 for lim in limits)
