"""infra/ and docker/ stay true to the code: manifests parse, name real entry points and loadable
configs, use the same image and pins, and the DeepSpeed templates equal what training produces.

Nothing here needs a cluster, Docker or the network.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
KUBERAY = INFRA / "kuberay"
CLUSTER_YAML = INFRA / "ray" / "cluster-gpu.yaml"
DOCKERFILES = [REPO / "docker" / "Dockerfile.cuda", REPO / "docker" / "Dockerfile.cpu"]
MANIFESTS = sorted(
    p for p in INFRA.rglob("*") if p.suffix in {".yaml", ".yml", ".json"} and p.is_file()
)


def load(path: Path) -> Any:
    text = path.read_text()
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


def locked_version(package: str) -> str:
    for line in (REPO / "requirements" / "constraints.lock.txt").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and name.strip().lower() == package:
            return version.strip()
    raise AssertionError(f"{package} is not in requirements/constraints.lock.txt")


def project_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def check_python_command(command: str) -> str:
    """`python -m MODULE args…` names an importable module and, for our CLIs, valid arguments."""
    words = shlex.split(command)
    assert "python" in words and "-m" in words, f"not a `python -m` command: {command!r}"
    at = words.index("-m")
    module, args = words[at + 1], words[at + 2 :]
    assert importlib.util.find_spec(module) is not None, f"no module {module!r} ({command!r})"
    overrides = [args[i + 1] for i, word in enumerate(args) if word == "--set"]
    if module == "pipelines":
        from pipelines.stages import STAGE_ORDER

        assert args and args[0] in [*STAGE_ORDER, "all"], f"unknown stage in {command!r}"
        assert "--config" in args, f"`python -m pipelines` needs --config: {command!r}"
        config = args[args.index("--config") + 1]
    elif module == "flows":
        config = args[0] if args and not args[0].startswith("-") else "local"
    else:
        return module
    from pipelines.config.pipeline import load_pipeline_config

    load_pipeline_config(config, overrides)  # raises, naming the field, when it does not load
    return module


# ----- every file parses ---------------------------------------------------------------------


def test_infra_has_manifests() -> None:
    names = {p.relative_to(INFRA).as_posix() for p in MANIFESTS}
    assert {
        "ray/cluster-gpu.yaml",
        "kuberay/raycluster.yaml",
        "kuberay/rayjob.yaml",
        "kuberay/kustomization.yaml",
        "prefect/vlora-process.json",
        "deepspeed/zero2.json",
        "deepspeed/zero3.json",
        "deepspeed/zero3-offload.json",
    } <= names


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_infra_file_parses(path: Path) -> None:
    assert isinstance(load(path), dict)


# ----- KubeRay ---------------------------------------------------------------------------------


def kuberay(kind: str) -> dict:
    docs = {load(p)["kind"]: load(p) for p in KUBERAY.glob("*.yaml")}
    return docs[kind]


def cluster_spec(kind: str) -> dict:
    doc = kuberay(kind)
    return doc["spec"] if kind == "RayCluster" else doc["spec"]["rayClusterSpec"]


def containers(spec: dict) -> list[dict]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def expected_image_suffix() -> str:
    return f"/vlora-cuda:{project_version()}"


@pytest.mark.parametrize("kind", ["RayCluster", "RayJob"])
def test_infra_kuberay_manifest(kind: str) -> None:
    doc = kuberay(kind)
    assert doc["apiVersion"] == "ray.io/v1"
    spec = cluster_spec(kind)
    assert spec["rayVersion"] == locked_version("ray")
    # in-cluster only: no LoadBalancer/NodePort for the dashboard or the client port
    assert spec["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"
    for container in containers(spec):
        assert container["image"].endswith(expected_image_suffix()), container["image"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["RAY_USAGE_STATS_ENABLED"] == "0"
        assert env["DO_NOT_TRACK"] == "1"
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        # KubeRay turns "true" into a bare flag: `ray start --disable-usage-stats`
        assert group["rayStartParams"]["disable-usage-stats"] == "true"
        for value in group["rayStartParams"].values():
            assert isinstance(value, str), "rayStartParams values must be strings"
    gpu_groups, cpu_groups = [], []
    for worker in spec["workerGroupSpecs"]:
        for container in worker["template"]["spec"]["containers"]:
            resources = container["resources"]
            assert resources["limits"] == resources["requests"], worker["groupName"]
            gpus = int(resources["limits"].get("nvidia.com/gpu", 0))
            (gpu_groups if gpus > 0 else cpu_groups).append(worker["groupName"])
        assert int(worker["minReplicas"]) <= int(worker["replicas"]) <= int(worker["maxReplicas"])
    # GPU workers for features, training and eval; CPU workers for the download's Ray tasks,
    # which the autoscaler starts instead of GPU nodes for work that asks for no GPU
    assert gpu_groups and cpu_groups
    assert spec["enableInTreeAutoscaling"] is True


def test_infra_rayjob_runs_a_real_entry_point() -> None:
    job = kuberay("RayJob")
    assert check_python_command(job["spec"]["entrypoint"]) == "pipelines"
    assert job["spec"]["shutdownAfterJobFinishes"] is True


def test_infra_rayjob_cluster_equals_raycluster() -> None:
    assert cluster_spec("RayJob") == cluster_spec("RayCluster")


def dockerfile_workdir(dockerfile: Path) -> str:
    return [args for kind, args in instructions(dockerfile) if kind == "WORKDIR"][-1]


def test_infra_kustomization_runs_a_prefect_worker_beside_the_ray_head() -> None:
    import jsonpatch

    kustomization = load(KUBERAY / "kustomization.yaml")
    assert kustomization["resources"] == ["raycluster.yaml"]
    (patch,) = kustomization["patches"]
    cluster = kuberay("RayCluster")
    assert patch["target"]["kind"] == "RayCluster"
    assert patch["target"]["name"] == cluster["metadata"]["name"]
    patched = jsonpatch.apply_patch(cluster, yaml.safe_load(patch["patch"]))
    assert patched["spec"]["workerGroupSpecs"] == cluster["spec"]["workerGroupSpecs"]
    pod = patched["spec"]["headGroupSpec"]["template"]["spec"]
    head, worker = pod["containers"]
    assert head["name"] == "ray-head" and worker["image"] == head["image"]
    # the driver joins the head's node through Ray's session directory, shared by both
    (volume,) = pod["volumes"]
    for container in (head, worker):
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts == {volume["name"]: "/tmp/ray"}
    env = {e["name"]: e["value"] for e in worker["env"]}
    # `auto` resolves through the session directory both containers mount (checked above)
    assert env["RAY_ADDRESS"] == "auto"
    assert env["VLORA_REPO_DIR"] == dockerfile_workdir(DOCKERFILES[0])  # prefect.yaml's pull step
    assert env["RAY_USAGE_STATS_ENABLED"] == "0" and env["DO_NOT_TRACK"] == "1"
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    # the pool every deployment goes to, through options the installed CLI has
    command = worker["command"]
    assert command[:3] == ["prefect", "worker", "start"]
    options = dict(zip(command[3::2], command[4::2], strict=True))
    assert options["--pool"] in {d["work_pool"]["name"] for d in prefect_yaml()["deployments"]}
    assert options["--type"] == "process"
    template = options["--base-job-template"]  # creates the pool with it when missing
    assert template.startswith(env["VLORA_REPO_DIR"] + "/")
    assert (REPO / template.removeprefix(env["VLORA_REPO_DIR"] + "/")).is_file()
    assert set(options) <= prefect_worker_start_options()


def prefect_worker_start_options() -> set[str]:
    """The option names of the installed `prefect worker start` (cyclopts parameters)."""
    import typing

    from prefect.cli.worker import start

    names: set[str] = set()
    for hint in typing.get_type_hints(start, include_extras=True).values():
        for meta in getattr(hint, "__metadata__", ()):
            names.update(getattr(meta, "name", None) or ())
    assert "--pool" in names, "could not read prefect's worker CLI options"
    return names


def test_infra_kuberay_gpus_cover_the_paper_run() -> None:
    from pipelines.config.pipeline import load_pipeline_config

    config = load_pipeline_config("paper")
    gpus = sum(
        int(w["maxReplicas"]) * int(c["resources"]["limits"].get("nvidia.com/gpu", 0))
        for w in cluster_spec("RayCluster")["workerGroupSpecs"]
        for c in w["template"]["spec"]["containers"]
    )
    needed = max(
        config.pretrain.num_workers,
        config.sft.num_workers,
        int(config.features.num_actors * config.features.gpus_per_actor),
        int(config.eval.num_actors * config.eval.gpus_per_actor),
    )
    assert gpus >= needed


# ----- Ray cluster launcher --------------------------------------------------------------------


def test_infra_cluster_launcher_validates_against_rays_schema() -> None:
    from ray.autoscaler._private.util import validate_config

    validate_config(load(CLUSTER_YAML))


def test_infra_cluster_launcher_commands() -> None:
    config = load(CLUSTER_YAML)
    head = " ".join(config["head_start_ray_commands"])
    worker = " ".join(config["worker_start_ray_commands"])
    assert "ray start --head" in head and "--port=6379" in head
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    # the dashboard and its job API stay on the head's loopback (reach them with `ray dashboard`)
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    assert "--address=$RAY_HEAD_IP:6379" in worker
    assert "--disable-usage-stats" in head and "--disable-usage-stats" in worker
    run_options = " ".join(config["docker"]["run_options"])
    assert "RAY_USAGE_STATS_ENABLED=0" in run_options
    assert config["docker"]["image"].endswith(expected_image_suffix())
    assert config["docker"]["image"] == containers(cluster_spec("RayCluster"))[0]["image"]
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    for name, node_type in types.items():
        assert node_type.get("max_workers", 0) <= config["max_workers"], name
    assert sum(t.get("max_workers", 0) for t in types.values()) <= config["max_workers"]
    # paper.yaml's download runs as 1-CPU Ray tasks: a CPU worker type takes them, not GPU nodes
    from pipelines.config.pipeline import load_pipeline_config

    assert load_pipeline_config("paper").download.distributor == "ray"
    cpu_workers = [
        name
        for name, t in types.items()
        if name != config["head_node_type"]
        and not t["node_config"]["InstanceType"].startswith(("p", "g"))
    ]
    assert cpu_workers, "no CPU worker type for the download tasks"


# ----- Prefect ---------------------------------------------------------------------------------


def prefect_yaml() -> dict:
    return load(REPO / "prefect.yaml")


def test_infra_work_pool_matches_prefect_yaml() -> None:
    pools = {d["work_pool"]["name"] for d in prefect_yaml()["deployments"]}
    assert pools == {"vlora-process"}
    for pool in pools:
        assert (INFRA / "prefect" / f"{pool}.json").is_file(), f"no base job template for {pool}"


def test_infra_process_base_job_template() -> None:
    from prefect.workers.process import ProcessWorker

    default = ProcessWorker.get_default_base_job_template()
    template = load(INFRA / "prefect" / "vlora-process.json")
    assert template["job_configuration"] == default["job_configuration"]
    assert set(template["variables"]["properties"]) == set(default["variables"]["properties"])
    env = template["variables"]["properties"]["env"]["default"]
    assert all(isinstance(v, str) for v in env.values())
    assert env["RAY_USAGE_STATS_ENABLED"] == "0"
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


@pytest.mark.parametrize("deployment", prefect_yaml()["deployments"], ids=lambda d: d["name"])
def test_infra_prefect_deployment_entrypoint_exists(deployment: dict) -> None:
    from prefect import Flow

    from pipelines.config.pipeline import load_pipeline_config
    from pipelines.stages import STAGE_ORDER

    file, func = deployment["entrypoint"].split(":")
    assert (REPO / file).is_file()
    module = importlib.import_module(file.removesuffix(".py").replace("/", "."))
    assert isinstance(getattr(module, func), Flow)
    params = deployment.get("parameters", {})
    load_pipeline_config(params.get("config", "local"), params.get("overrides", []))
    assert set(params.get("stages", [])) <= set(STAGE_ORDER)


# ----- DeepSpeed templates ---------------------------------------------------------------------


def regenerate_module():
    spec = importlib.util.spec_from_file_location(
        "infra_deepspeed_regenerate", INFRA / "deepspeed" / "regenerate.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_infra_deepspeed_templates_equal_the_code() -> None:
    regenerate = regenerate_module()
    expected = regenerate.expected_files()
    on_disk = {p.name for p in (INFRA / "deepspeed").glob("*.json")}
    assert on_disk == set(expected)
    for name, text in expected.items():
        assert (INFRA / "deepspeed" / name).read_text() == text, (
            f"infra/deepspeed/{name} is stale: run infra/deepspeed/regenerate.py"
        )


def test_infra_deepspeed_templates_cover_the_stages() -> None:
    zero = {
        name: load(INFRA / "deepspeed" / name)
        for name in ("zero2.json", "zero3.json", "zero3-offload.json")
    }
    assert [zero[n]["zero_optimization"]["stage"] for n in zero] == [2, 3, 3]
    assert "offload_optimizer" in zero["zero3-offload.json"]["zero_optimization"]
    assert all(c["bf16"]["enabled"] for c in zero.values())
    # the paper's global batches: pre-training 768, SFT 128
    assert zero["zero2.json"]["train_batch_size"] == 768
    assert zero["zero3.json"]["train_batch_size"] == 128


# ----- Docker ----------------------------------------------------------------------------------


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = [
        line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            out.append((keyword.upper(), " ".join(rest.split())))
    return out


def setup_sh_pip_commands() -> list[str]:
    text = (REPO / "scripts" / "setup.sh").read_text()
    # `pip …` lines and calls of the `pip_check` wrapper (pip check forgiving the --no-deps wheels)
    pattern = r"^pip(?: (?P<args>.+)|_(?P<wrapper>check))$"
    return [" ".join((m["args"] or m["wrapper"]).split()) for m in re.finditer(pattern, text, re.M)]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_infra_dockerfile_copies_existing_files(dockerfile: Path) -> None:
    copies = [args for kind, args in instructions(dockerfile) if kind == "COPY"]
    assert copies
    for args in copies:
        words = [w for w in args.split() if not w.startswith("--")]
        for source in words[:-1]:
            assert (REPO / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_infra_dockerfile_installs_like_setup_sh(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    runs = " && ".join(args for kind, args in steps if kind == "RUN")
    # every pip step of scripts/setup.sh, with the same requirement files and flags, in order
    positions = []
    for command in setup_sh_pip_commands():
        if command == "check":
            needle = "pip check"
        elif command.startswith("install -r requirements/base.txt"):
            assert (
                command == "install -r requirements/base.txt -c requirements/constraints.lock.txt"
            )
            needle = "-r requirements/base.txt -c requirements/constraints.lock.txt"
        else:
            needle = f"pip {command}"
        assert needle in runs, f"{dockerfile.name} lacks setup.sh's `pip {command}`"
        positions.append(runs.index(needle))
    assert positions == sorted(positions), "pip steps are not in setup.sh's order"
    # the same import check as setup.sh
    imports = re.search(r"-c '(import torch[^']+)'", (REPO / "scripts" / "setup.sh").read_text())
    assert imports and imports.group(1) in runs
    # a non-root user runs the installs and the container
    users = [args for kind, args in steps if kind == "USER"]
    assert users and users[-1] not in {"root", "0"}
    first_user = next(i for i, (kind, _) in enumerate(steps) if kind == "USER")
    first_pip = next(i for i, (kind, args) in enumerate(steps) if kind == "RUN" and "pip" in args)
    assert first_user < first_pip
    env = " ".join(args for kind, args in steps if kind == "ENV")
    assert "RAY_USAGE_STATS_ENABLED=0" in env and "DO_NOT_TRACK=1" in env


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_infra_dockerfile_default_command(dockerfile: Path) -> None:
    cmd = [args for kind, args in instructions(dockerfile) if kind == "CMD"][-1]
    words = json.loads(cmd)
    if "-m" in words:
        check_python_command(shlex.join(words))
    else:
        assert words == ["bash"]


def test_infra_dockerignore_keeps_the_context_small() -> None:
    patterns = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", "**/__pycache__", "runs"} <= patterns


# ----- docs and configs ------------------------------------------------------------------------


@pytest.mark.parametrize("readme", ["infra/README.md", "docker/README.md"])
def test_infra_readme_paths_exist(readme: str) -> None:
    text = (REPO / readme).read_text()
    paths = set(re.findall(r"(?<![\w/])((?:infra|docker|pipelines/run_configs)/[\w./-]*\w)", text))
    assert paths
    for path in paths:
        assert (REPO / path).exists(), f"{readme} names {path}, which does not exist"


def test_infra_paper_config_loads() -> None:
    from pipelines.config.pipeline import load_pipeline_config

    config = load_pipeline_config("paper")
    assert config.preset == "vicuna7b-clip336"
    assert config.ray.address == "auto"
    assert config.download.pretrain.kind == "capsfusion"
    assert config.download.sft.kind == "llava"
    assert config.download.image_size == 336
    for section, lr, batch in ((config.pretrain, 5e-5, 768), (config.sft, 2e-5, 128)):
        assert (section.lr, section.global_batch_size) == (lr, batch)
        assert (section.strategy, section.zero_stage, section.precision) == (
            "deepspeed",
            2,
            "bf16",
        )
        assert section.use_gpu is True
    assert [b.key for b in config.eval.benchmarks] == [
        "MMBench_DEV_EN",
        "MME",
        "ScienceQA_TEST",
        "HallusionBench",
        "MMMU_DEV_VAL",
        "CCBench",
    ]
