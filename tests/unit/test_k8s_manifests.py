"""infra/k8s: every manifest and every rendered kustomization validates against the Kubernetes
schemas (kubernetes-validate, strict: unknown fields fail), torchrun's arguments agree with the
Job's resources in the base and in every overlay, each rank gets a GPU-sized micro batch, NCCL is
told its interface (and, in the RDMA overlay, its HCAs), a wrong edit is caught, and the node launcher
(infra/k8s/base/train_node.py) exits as the Job's podFailurePolicy expects. No cluster here."""

import glob
import importlib.util
import os

import kubernetes_validate
import pytest

import k8s_render
from k8s_render import job_problems, render
from paths import REPO as ROOT

K8S = os.path.join(ROOT, "infra", "k8s")
BASE = os.path.join(K8S, "base")
OVERLAYS = sorted(glob.glob(os.path.join(K8S, "overlays", "*")))
LAYOUTS = [BASE] + OVERLAYS
# the oldest Kubernetes these Jobs are written for (podReplacementPolicy and podFailurePolicy on by
# default) and the newest schema the package bundles
VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]


def claims() -> dict:
    return {
        o["metadata"]["name"]: o for o in render(os.path.join(K8S, "storage")) if o["kind"] == "PersistentVolumeClaim"
    }


def job(objects: list[dict]) -> dict:
    (j,) = [o for o in objects if o["kind"] == "Job"]
    return j


def trainer(objects: list[dict]) -> dict:
    return job(objects)["spec"]["template"]["spec"]["containers"][0]


def set_arg(objects: list[dict], prefix: str, value: str) -> None:
    args = trainer(objects)["args"]
    (i,) = [i for i, a in enumerate(args) if a.startswith(prefix)]
    args[i] = prefix + value


def layout_id(path: str) -> str:
    return os.path.relpath(path, K8S)


# --- schemas -----------------------------------------------------------------------------------

MANIFESTS = sorted(
    p
    for p in glob.glob(os.path.join(K8S, "**", "*.yaml"), recursive=True)
    if os.path.basename(p) != k8s_render.KUSTOMIZATION
)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=layout_id)
def test_every_manifest_file_validates(path, version):
    """Resources as written, and the overlays' patches as the partial objects they are."""
    for doc in k8s_render.load_documents(path):
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("layout", LAYOUTS + [os.path.join(K8S, "storage")], ids=layout_id)
def test_every_rendered_layout_validates(layout, version):
    objects = render(layout)
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_strict_validation_rejects_a_misspelt_field():
    objects = render(BASE)
    trainer(objects)["resource"] = trainer(objects).pop("resources")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job(objects), VERSIONS[-1], strict=True)


# --- torchrun against the resources ------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS, ids=layout_id)
def test_torchrun_agrees_with_the_resources(layout):
    assert job_problems(render(layout), claims()) == []


def test_overlay_sets_nodes_gpus_and_image():
    objects = render(os.path.join(K8S, "overlays", "4-nodes-8-gpus"))
    spec = job(objects)["spec"]
    args = k8s_render.torchrun_args(trainer(objects)["command"] + trainer(objects)["args"])
    assert (spec["completions"], spec["parallelism"], args.nnodes, args.nproc_per_node) == (4, 4, "4", "8")
    assert trainer(objects)["resources"]["limits"][k8s_render.GPU] == 8
    assert trainer(objects)["image"] == "REGISTRY/bert-pretrain-training:0.1.0"
    # merged, not replaced: the base's env, mounts and requests are still there
    assert {e["name"] for e in trainer(objects)["env"]} >= {"NODE_RANK", "WANDB_API_KEY"}
    assert {m["mountPath"] for m in trainer(objects)["volumeMounts"]} == {
        "/shared",
        "/dev/shm",
        "/opt/bert-pretrain/k8s",
    }
    assert trainer(objects)["resources"]["requests"]["memory"] == "256Gi"


def trainer_config(objects: list[dict]):
    """The trainer's config (TrainConfig) composed from the Job's overrides, as ``python -m training`` would."""
    from hydra import compose, initialize_config_dir

    from training.config import register_configs, to_train_config

    args = k8s_render.torchrun_args(trainer(objects)["command"] + trainer(objects)["args"])
    register_configs()
    with initialize_config_dir(config_dir=k8s_render.TRAINING_CONF, version_base="1.3"):
        return to_train_config(compose(config_name="train", overrides=list(args.training_script_args)))


GPU_MICRO_BATCH_TOKENS = 256 * 128
"""Tokens a rank's micro batch should hold on an 80-141 GB GPU: 256 sequences of 128, ~36 ms of BERT-Base
work at 50% of an H100's bf16 peak, well above the ~10 ms of its gradient all-reduce across nodes."""


@pytest.mark.parametrize("layout", LAYOUTS, ids=layout_id)
def test_every_layout_gives_each_rank_a_gpu_sized_micro_batch(layout):
    """A global batch that fits the rank count: not BERT's 256 spread over 16-32 GPUs (8-16 sequences,
    a few ms of compute a step against the gradient traffic), but full micro batches on every rank."""
    objects = render(layout)
    cfg = trainer_config(objects)
    args = k8s_render.torchrun_args(trainer(objects)["command"] + trainer(objects)["args"])
    ranks = int(args.nnodes) * int(args.nproc_per_node)
    assert cfg.data.micro_batch_size * cfg.data.max_seq_length >= GPU_MICRO_BATCH_TOKENS
    accumulation = cfg.trainer.global_batch_size // (cfg.data.micro_batch_size * ranks)
    assert cfg.trainer.global_batch_size == cfg.data.micro_batch_size * accumulation * ranks and accumulation >= 1


@pytest.mark.parametrize("layout", LAYOUTS, ids=layout_id)
def test_nccl_bootstraps_over_the_pod_network(layout):
    env = {e["name"]: e.get("value") for e in trainer(render(layout))["env"]}
    assert env["NCCL_SOCKET_IFNAME"] == "eth0"


RDMA = os.path.join(K8S, "overlays", "4-nodes-8-gpus-rdma")
RDMA_RESOURCE = "rdma/rdma_shared_device_a"


def test_rdma_overlay_gives_nccl_the_hca():
    objects = render(RDMA)
    container = trainer(objects)
    assert container["resources"]["limits"][RDMA_RESOURCE] == 1
    assert container["resources"]["limits"][k8s_render.GPU] == 8  # the shape of its resource overlay
    assert container["securityContext"]["capabilities"]["add"] == ["IPC_LOCK"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NCCL_IB_DISABLE"] == "0" and env["NCCL_IB_HCA"] == "mlx5" and env["NCCL_DEBUG"] == "INFO"
    assert env["NCCL_SOCKET_IFNAME"] == "eth0" and "NODE_RANK" in env  # the base's, merged
    pod = job(objects)["spec"]["template"]["spec"]
    (shm,) = [v for v in pod["volumes"] if v["name"] == "dshm"]
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Gi"}  # NCCL and loader workers
    assert job(objects)["spec"]["completions"] == 4


def wrong(edit):
    def apply(objects):
        edit(objects)
        return objects

    return apply


WRONG_EDITS = {
    "nnodes": (wrong(lambda o: set_arg(o, "--nnodes=", "3")), "--nnodes=3 but completions=2"),
    "parallelism": (wrong(lambda o: job(o)["spec"].update(parallelism=1)), "parallelism=1"),
    "gpus": (
        wrong(lambda o: trainer(o)["resources"]["limits"].update({k8s_render.GPU: 4})),
        "--nproc_per_node=8 but the nvidia.com/gpu limit is 4",
    ),
    "endpoint": (
        wrong(lambda o: set_arg(o, "--rdzv_endpoint=", "bert-pretrain-0.bert-pretrain:29500")),
        "pod 0 of Job bert-pretrain is bert-pretrain-0.bert-pretrain-nodes",
    ),
    "job name": (wrong(lambda o: job(o)["metadata"].update(name="bert-large")), "pod 0 of Job bert-large"),
    "subdomain": (
        wrong(lambda o: job(o)["spec"]["template"]["spec"].update(subdomain="nodes")),
        "no Service named like the pod template's subdomain",
    ),
    "selector": (
        wrong(lambda o: [s["spec"].update(selector={"job-name": "other"}) for s in o if s["kind"] == "Service"]),
        "does not select the Job's pods",
    ),
    "not headless": (
        wrong(lambda o: [s["spec"].pop("clusterIP") for s in o if s["kind"] == "Service"]),
        "not headless",
    ),
    "rdzv_id": (wrong(lambda o: set_arg(o, "--rdzv_id=", "run1")), "--rdzv_id=run1"),
    "output_dir": (wrong(lambda o: set_arg(o, "output_dir=", "/tmp/run")), "output_dir=/tmp/run is not on a"),
    "data_dir": (wrong(lambda o: set_arg(o, "data_dir=", "/data/shards")), "data_dir=/data/shards is not on a"),
    "shm": (wrong(lambda o: trainer(o)["volumeMounts"].pop(1)), "/dev/shm is not a memory emptyDir"),
    "backoffLimit": (wrong(lambda o: job(o)["spec"].update(backoffLimit=1)), "backoffLimit 1 < --nnodes=2"),
    "disruptions": (wrong(lambda o: job(o)["spec"]["podFailurePolicy"]["rules"].pop(0)), "DisruptionTarget"),
    "clean stop": (wrong(lambda o: job(o)["spec"]["podFailurePolicy"]["rules"].pop(1)), "exit code 75"),
    "grace": (
        wrong(lambda o: job(o)["spec"]["template"]["spec"].pop("terminationGracePeriodSeconds")),
        "terminationGracePeriodSeconds",
    ),
    "batch": (
        wrong(lambda o: set_arg(o, "data.micro_batch_size=", "1024")),
        "global_batch_size 8192 is not divisible by data.micro_batch_size 1024 x world size 16",
    ),
    "override": (wrong(lambda o: trainer(o)["args"].append("trainer.max_step=10")), "the trainer's config"),
    "launcher": (wrong(lambda o: [m["data"].clear() for m in o if m["kind"] == "ConfigMap"]), "the launcher"),
    "torchrun flag": (wrong(lambda o: trainer(o)["args"].insert(1, "--gpus=8")), "torchrun rejects its arguments"),
}


@pytest.mark.parametrize("name", WRONG_EDITS)
def test_checker_rejects_a_wrong_edit(name):
    edit, message = WRONG_EDITS[name]
    problems = job_problems(edit(render(BASE)), claims())
    assert any(message in p for p in problems), problems


def test_checker_rejects_an_overlay_with_nnodes_not_completions(tmp_path):
    """An overlay that changes the node count in completions/parallelism only, rendered for real."""
    (tmp_path / "kustomization.yaml").write_text(
        f"resources: [{os.path.relpath(BASE, tmp_path)}]\npatches:\n  - path: patch.yaml\n"
    )
    (tmp_path / "patch.yaml").write_text(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: bert-pretrain}\nspec: {completions: 4, parallelism: 4}\n"
    )
    objects = render(str(tmp_path))
    assert job(objects)["spec"]["completions"] == 4
    assert "--nnodes=2 but completions=4 parallelism=4" in job_problems(objects, claims())


def test_checker_rejects_a_read_write_once_claim():
    rwo = claims()
    rwo["bert-pretrain-shared"]["spec"]["accessModes"] = ["ReadWriteOnce"]
    assert any("is not ReadWriteMany" in p for p in job_problems(render(BASE), rwo))


# --- the renderer ------------------------------------------------------------------------------


def test_strategic_merge_merges_by_key_and_replaces_scalar_lists():
    base = {
        "containers": [
            {"name": "a", "args": ["x", "y"], "env": [{"name": "E", "value": "1"}]},
            {"name": "b", "image": "i"},
        ]
    }
    patch = {"containers": [{"name": "a", "args": ["z"], "env": [{"name": "F", "value": "2"}]}]}
    assert k8s_render.strategic_merge(base, patch) == {
        "containers": [
            {"name": "a", "args": ["z"], "env": [{"name": "E", "value": "1"}, {"name": "F", "value": "2"}]},
            {"name": "b", "image": "i"},
        ]
    }


@pytest.mark.parametrize(
    "image,transform,expected",
    [
        ("app", {"name": "app", "newTag": "1"}, "app:1"),
        ("app:0", {"name": "app", "newName": "r.io/x/app"}, "r.io/x/app:0"),
        ("host:5000/app:0", {"name": "host:5000/app", "digest": "sha256:ab"}, "host:5000/app@sha256:ab"),
        ("other:0", {"name": "app", "newTag": "1"}, "other:0"),
    ],
)
def test_images_transformer(image, transform, expected):
    obj = {"kind": "Job", "spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}}
    assert k8s_render.set_image(obj, transform)["spec"]["template"]["spec"]["containers"][0]["image"] == expected


def test_renderer_refuses_what_it_does_not_do(tmp_path):
    (tmp_path / "kustomization.yaml").write_text(f"resources: [{os.path.relpath(BASE, tmp_path)}]\nnamePrefix: x-\n")
    with pytest.raises(k8s_render.RenderError, match="namePrefix"):
        render(str(tmp_path))


# --- the node launcher -------------------------------------------------------------------------

LAUNCHER = os.path.join(BASE, "train_node.py")
spec = importlib.util.spec_from_file_location("train_node", LAUNCHER)
train_node = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_node)


def test_launcher_exit_code_is_the_one_the_job_ignores():
    from training.__main__ import EXIT_CONFIG_ERROR

    assert train_node.EXIT_STOPPED == k8s_render.EXIT_STOPPED
    fail_job = job(render(BASE))["spec"]["podFailurePolicy"]["rules"][2]
    assert fail_job["action"] == "FailJob"
    assert train_node.EXIT_USAGE == EXIT_CONFIG_ERROR and EXIT_CONFIG_ERROR in fail_job["onExitCodes"]["values"]


def test_launcher_reads_its_arguments():
    args = trainer(render(BASE))["args"]
    assert train_node.rendezvous_host(args) == "bert-pretrain-0.bert-pretrain-nodes"
    assert train_node.rendezvous_host(["torchrun", "--rdzv-endpoint", "h:1"]) == "h"
    assert train_node.hydra_value(args, "output_dir") == "/shared/runs/bert-base-phase1"


def test_launcher_needs_output_dir():
    assert train_node.main(["torchrun", "-m", "training"]) == train_node.EXIT_USAGE
