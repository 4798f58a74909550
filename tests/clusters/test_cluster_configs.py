"""clusters/: every `ray up` config passes Ray's own validation (the steps `ray up` runs
before touching a cloud: merge with the provider's defaults, Docker checks, then the JSON
schema) and carries token auth and the data directory to every node; the KubeRay manifest
is a RayJob with GPU workers; pyproject's Ray floor is what the code needs.

Ray's checks let a lot through that fails only in the cloud, so the files are also read for
it: the IAM roles / service accounts and the permissions documented for them, the GCP
Scheduling object of GPU VMs, the volumes the manifest mounts, one image (built from the
Dockerfile, with the README's torch) on every node, nothing pip-installed at node start, and
no `--quiet` where the README promises progress in the logs."""

from __future__ import annotations

import ast
import copy
import fnmatch
import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTERS = REPO / "clusters"
IAM = CLUSTERS / "iam"
RAY_UP = ("aws.yaml", "gcp.yaml", "onprem.yaml")
BASE_IMAGE = "rayproject/ray:2.60.0-py311-gpu"  # Ray's own GPU image: Ray 2.60.0, Python 3.11
# Ray 2.52.0 introduced token authentication (RAY_AUTH_MODE=token, `ray get-auth-token`),
# which the executor and every cluster config rely on; ray.tune.RunConfig is older.
RAY_FLOOR = (2, 52)
# Every list of shell commands a `ray up` config runs on a node.
NODE_COMMANDS = ("initialization_commands", "setup_commands", "head_setup_commands",
                 "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTERS / name).read_text())


def kuberay_documents() -> list[dict]:
    return [d for d in yaml.safe_load_all((CLUSTERS / "kuberay-rayjob.yaml").read_text()) if d]


def rayjob() -> dict:
    jobs = [d for d in kuberay_documents() if d.get("kind") == "RayJob"]
    assert len(jobs) == 1
    return jobs[0]


def pod_groups(job: dict) -> list[dict]:
    cluster = job["spec"]["rayClusterSpec"]
    return [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]


def readme() -> str:
    return (CLUSTERS / "README.md").read_text()


def documented_image() -> str:
    """The image clusters/README.md tells users to build and push."""
    built = re.findall(r"docker build -f clusters/Dockerfile -t (\S+) \.", readme())
    pushed = re.findall(r"docker push (\S+)", readme())
    assert built and set(built) == set(pushed), (built, pushed)
    assert len(set(built)) == 1, built
    return built[0]


def readme_torch() -> str:
    """The torch version of the top-level README's install lines."""
    versions = set(re.findall(r"pip install torch==(\S+)", (REPO / "README.md").read_text()))
    assert len(versions) == 1, versions
    return versions.pop()


def dockerfile() -> str:
    return (CLUSTERS / "Dockerfile").read_text()


def dockerfile_arg(name: str) -> str:
    m = re.search(rf"^ARG {name}=(\S+)$", dockerfile(), re.M)
    assert m, name
    return m[1]


def prepared(cfg: dict) -> dict:
    pytest.importorskip("jsonschema")
    from ray.autoscaler._private.util import prepare_config, validate_config

    out = prepare_config(copy.deepcopy(cfg))
    validate_config(out)
    return out


def statements(name: str) -> list[dict]:
    doc = json.loads((IAM / name).read_text())
    return [s for s in doc["Statement"] if s["Effect"] == "Allow"]


def as_list(x) -> list:
    return x if isinstance(x, list) else [x]


def allows(stmts: list[dict], action: str, resource: str) -> bool:
    """Whether one Allow statement names ``action`` on ``resource`` (IAM wildcards)."""
    return any(fnmatch.fnmatchcase(action, a) and any(fnmatch.fnmatchcase(resource, r)
                                                      for r in as_list(s["Resource"]))
               for s in stmts for a in as_list(s["Action"]))


# ------------------------------------------------------------------ Ray's own checks


@pytest.mark.parametrize("name", RAY_UP)
def test_ray_up_config_validates(name):
    cfg = prepared(load(name))
    assert cfg["head_node_type"] in cfg["available_node_types"]


@pytest.mark.parametrize("name", RAY_UP)
def test_ray_up_config_uses_token_auth_and_ships_the_data(name):
    cfg = prepared(load(name))
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    for section in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in cfg[section] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts), section
    setup = " ".join(cfg["setup_commands"])
    assert "export RAY_AUTH_MODE=token" in setup  # for drivers started by `ray submit`
    # The scripts' default data directory (~/raytda-data/<name>) exists on every node.
    assert cfg["file_mounts"]["~/raytda-data"] == "~/raytda-data"


def test_aws_ami_is_not_rays_stale_default():
    """`latest_dlami` (or no ImageId) makes Ray substitute its 2021 Ubuntu 18.04 DLAMI;
    run Ray's own AMI step and check it leaves ours alone."""
    pytest.importorskip("boto3", reason="Ray's AWS autoscaler module needs boto3")
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
    from ray.tune import RunConfig  # noqa: F401  (raytda.tune.search uses it)

    assert tuple(int(x) for x in ray.__version__.split(".")[:2]) >= RAY_FLOOR


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
    job = rayjob()
    assert job["apiVersion"] == "ray.io/v1"
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
    envs = [{e["name"]: e["value"] for e in c.get("env", [])}
            for g in pod_groups(job) for c in g["template"]["spec"]["containers"]]
    assert all(e.get("RAYTDA_DATA", "").startswith("/data/") for e in envs)


# ------------------------------------------------------------------ one image, pinned


def test_every_config_runs_the_documented_image():
    image = documented_image()
    assert not image.endswith(":latest") and ":" in image.rsplit("/", 1)[-1]
    assert f"torch{readme_torch()}" in image.rsplit(":", 1)[1]  # the tag names its torch
    for name in RAY_UP:
        docker = prepared(load(name))["docker"]
        assert docker["image"] == image, name
        assert not {"head_image", "worker_image"} & set(docker), "one image on every node"
    job = rayjob()
    images = {c["image"] for g in pod_groups(job) for c in g["template"]["spec"]["containers"]}
    assert images == {image}
    # The image's Ray is the RayJob's.
    assert re.search(rf"^FROM {re.escape(BASE_IMAGE)}$", dockerfile(), re.M)
    assert job["spec"]["rayClusterSpec"]["rayVersion"] == BASE_IMAGE.split(":")[1].split("-")[0]


def test_dockerfile_pins_the_readme_torch_as_a_cuda_build():
    version, cuda = dockerfile_arg("TORCH_VERSION"), dockerfile_arg("TORCH_CUDA")
    assert version == readme_torch()
    assert re.fullmatch(r"cu\d+", cuda)
    runs = re.findall(r"^RUN (.+?)(?<!\\)$", dockerfile(), re.M | re.S)
    installs = [r for r in runs if "pip install" in r]
    # First the CUDA build from the PyTorch index, then everything else with torch held at
    # the same version, and the build checks that pip kept that exact build.
    assert '"torch==${TORCH_VERSION}"' in installs[0]
    assert "https://download.pytorch.org/whl/${TORCH_CUDA}" in installs[0]
    assert all('"torch==${TORCH_VERSION}"' in r for r in installs[1:])
    assert "'${TORCH_VERSION}+${TORCH_CUDA}'" in installs[-1]
    assert '"ray[default,tune]==2.60.0"' in installs[-1]  # extras only: never a different Ray


def test_dockerfile_copies_existing_paths_its_context_lets_through():
    lines = (CLUSTERS / "Dockerfile.dockerignore").read_text().splitlines()
    ignore = [x.strip() for x in lines if x.strip() and not x.startswith("#")]
    assert ignore[0] == "*"  # nothing but what is let through below
    sources = [src for line in re.findall(r"^COPY (.+)$", dockerfile(), re.M)
               for src in line.split()[:-1] if not src.startswith("--")]
    assert sources
    for src in sources:
        assert (REPO / src).exists(), src
        assert f"!{src}" in ignore, src


@pytest.mark.parametrize("name", RAY_UP)
def test_nodes_install_nothing_at_start(name):
    """torch, Ray and raytda come with the image: no command pip-installs anything (an
    unpinned CUDA torch took minutes per autoscaled node and drifted between nodes)."""
    cfg = load(name)
    for section in NODE_COMMANDS:
        for cmd in cfg.get(section) or []:
            assert not re.search(r"\bpip3?\s+install\b", cmd), (section, cmd)
    for node_type in cfg.get("available_node_types", {}).values():  # per-type setup
        for cmd in node_type.get("worker_setup_commands") or []:
            assert not re.search(r"\bpip3?\s+install\b", cmd), cmd


# ------------------------------------------------------------------ IAM


def test_aws_head_uses_rays_role_and_workers_a_documented_store_profile():
    # Ray's AWS config module imports boto3 (the test extra installs it).
    pytest.importorskip("boto3", reason="Ray's AWS autoscaler module needs boto3")
    from ray.autoscaler._private.aws.config import DEFAULT_RAY_IAM_ROLE

    cfg = load("aws.yaml")
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]["node_config"]
    # No profile on the head: `ray up` attaches Ray's own, with the autoscaler's rights.
    assert "IamInstanceProfile" not in head
    profiles = {t["node_config"]["IamInstanceProfile"]["Name"]
                for k, t in types.items() if k != cfg["head_node_type"]}
    assert len(profiles) == 1  # every worker type has it: the workers write the store
    worker = profiles.pop()

    trust = statements("aws-worker-trust.json")
    assert any(s["Action"] == "sts:AssumeRole"
               and s["Principal"] == {"Service": "ec2.amazonaws.com"} for s in trust)
    store = statements("aws-worker-store.json")
    assert allows(store, "s3:ListBucket", "arn:aws:s3:::BUCKET")
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"):
        assert allows(store, action, "arn:aws:s3:::BUCKET/raytda/store/x.st"), action
    assert not allows(store, "s3:PutObject", "arn:aws:s3:::another-bucket/x"), "one bucket"

    # Ray's head role may hand exactly this role to EC2, and read the AMI parameters.
    launch = statements("aws-head-launch-workers.json")
    assert allows(launch, "iam:PassRole", f"arn:aws:iam::123456789012:role/{worker}")
    assert not allows(launch, "iam:PassRole", "arn:aws:iam::123456789012:role/admin")
    region = cfg["provider"]["region"]
    for t in types.values():
        ami = t["node_config"]["ImageId"]
        if ami.startswith("resolve:ssm:"):
            param = f"arn:aws:ssm:{region}::parameter{ami.removeprefix('resolve:ssm:')}"
            assert allows(launch, "ssm:GetParameters", param), param

    text = readme()
    for name in ("aws-worker-trust.json", "aws-worker-store.json", "aws-head-launch-workers.json"):
        assert f"file://clusters/iam/{name}" in text, name
    assert f"--instance-profile-name {worker}" in text
    assert f"put-role-policy --role-name {DEFAULT_RAY_IAM_ROLE}" in text


def module_constants(module: str) -> dict:
    """Module-level constants (names in capitals) of a module, computed from its source
    without importing it: Ray's GCP config module imports Google client libraries that this
    test environment need not have, and only its constants are wanted."""
    spec = importlib.util.find_spec(module)
    assert spec and spec.origin
    env: dict = {}
    for node in ast.parse(Path(spec.origin).read_text()).body:
        if isinstance(node, ast.Assign) and all(
                isinstance(t, ast.Name) and t.id.isupper() for t in node.targets):
            try:
                value = eval(compile(ast.Expression(node.value), spec.origin, "eval"),
                             {"__builtins__": {}}, env)
            except Exception:  # refers to something imported: not a plain constant
                continue
            env.update({t.id: value for t in node.targets})
    return env


def test_gcp_head_uses_rays_account_and_workers_a_documented_store_account():
    ray_gcp = module_constants("ray.autoscaler._private.gcp.config")
    rays_account, rays_roles = (ray_gcp["DEFAULT_SERVICE_ACCOUNT_ID"],
                                ray_gcp["DEFAULT_SERVICE_ACCOUNT_ROLES"])

    cfg = load("gcp.yaml")
    types = cfg["available_node_types"]
    assert "serviceAccounts" not in types[cfg["head_node_type"]]["node_config"]
    # Ray's account may create VMs and attach another account to them.
    assert {"roles/compute.admin", "roles/iam.serviceAccountUser"} <= set(rays_roles)
    emails = {a["email"] for k, t in types.items() if k != cfg["head_node_type"]
              for a in t["node_config"]["serviceAccounts"]}
    assert len(emails) == 1
    account = emails.pop().split("@")[0]

    role = yaml.safe_load((IAM / "gcp-store-role.yaml").read_text())
    assert {"storage.buckets.get", "storage.objects.create", "storage.objects.delete",
            "storage.objects.get", "storage.objects.list"} <= set(role["includedPermissions"])
    assert not [p for p in role["includedPermissions"] if not p.startswith("storage.")]

    text = readme()
    assert f"gcloud iam service-accounts create {account} " in text
    assert "--file clusters/iam/gcp-store-role.yaml" in text
    for member in (account, rays_account):
        assert re.search(rf"add-iam-policy-binding gs://BUCKET [^\n]*roles/raytdaStore \\\s*\n"
                         rf"\s*--member serviceAccount:{member}@", text), member


# ------------------------------------------------------------------ GCP scheduling

# Fields of the Compute API's Scheduling object (instances.insert) this config may use.
SCHEDULING_FIELDS = {"onHostMaintenance", "automaticRestart", "preemptible",
                     "provisioningModel", "instanceTerminationAction", "nodeAffinities",
                     "minNodeCpus", "locationHint", "maxRunDuration"}


def test_gcp_gpu_nodes_stop_for_host_maintenance():
    types = load("gcp.yaml")["available_node_types"]
    for name, t in types.items():
        node = t["node_config"]
        if "scheduling" in node:
            # An object: a list passes Ray's schema and is refused by the Compute API.
            assert isinstance(node["scheduling"], dict), name
            assert set(node["scheduling"]) <= SCHEDULING_FIELDS, name
        if node.get("guestAccelerators"):
            assert node["scheduling"]["onHostMaintenance"] == "TERMINATE", name
            assert isinstance(node["scheduling"].get("automaticRestart", True), bool)
    assert any(t["node_config"].get("guestAccelerators") for t in types.values())


# ------------------------------------------------------------------ KubeRay volumes


def test_kuberay_manifest_defines_every_volume_it_mounts():
    docs = kuberay_documents()
    claims = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "PersistentVolumeClaim"}
    groups = pod_groups(rayjob())
    claimed = []
    for g in groups:
        spec = g["template"]["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes, m["name"]
        for v in volumes.values():
            if "persistentVolumeClaim" in v:
                claimed.append(v["persistentVolumeClaim"]["claimName"])
    assert claimed
    for name in set(claimed):
        assert name in claims, f"claim {name} is not defined in the manifest"
        spec = claims[name]["spec"]
        # Head and workers (on different nodes) write the store at the same time.
        assert "ReadWriteMany" in spec["accessModes"], name
        assert spec["resources"]["requests"]["storage"]


def test_no_quiet_where_logs_promise_progress():
    assert "--quiet" not in rayjob()["spec"]["entrypoint"]
    commands = re.sub(r"\\\n\s*", " ", readme())  # join continued lines
    runs = [line for line in commands.splitlines()
            if re.search(r"\braytda (sweep|plan|report|scores)\b|experiments/\S+\.py", line)]
    assert runs
    assert not [line for line in runs if "--quiet" in line]
    assert "progress lines" in readme()
