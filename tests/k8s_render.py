"""Render the kustomize layouts in ``infra/k8s`` without kustomize, and check a training Job's
torchrun arguments against its resources.

    render(directory) -> [manifest, ...]     what ``kubectl kustomize <directory>`` gives
    job_problems(manifests, claims) -> [str]  every disagreement, empty when the Job is consistent

The renderer does exactly the subset of kustomize the layouts use, and refuses everything else
(an unknown kustomization key, a ``$patch`` directive, a JSON 6902 patch), so an overlay cannot
quietly mean something else here than under kustomize:

- ``resources``: files, or directories holding a kustomization.yaml (rendered first);
- ``patches`` with ``path``: strategic merge patches matched by apiVersion, kind and name. Maps
  merge key by key; lists of objects whose merge key kustomize knows (``MERGE_KEYS``: containers by
  name, volumeMounts by mountPath, ...) merge element by element; every other list is replaced;
- ``images``: ``newName`` / ``newTag`` / ``digest`` for containers whose image name matches;
- ``configMapGenerator`` with ``files``, under ``generatorOptions.disableNameSuffixHash: true``.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Optional

import yaml

from paths import CONF

KUSTOMIZATION = "kustomization.yaml"
KNOWN_KEYS = {"apiVersion", "kind", "resources", "patches", "images", "configMapGenerator", "generatorOptions"}
MERGE_KEYS = {  # field name -> merge key of its list items (the Kubernetes API's patchMergeKey)
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}
GPU = "nvidia.com/gpu"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
EXIT_STOPPED = 75  # infra/k8s/base/train_node.py
TRAINING_CONF = os.path.join(CONF, "train")
TORCHRUN_WORKER_KILL_S = 30  # torch.distributed.elastic: workers get this long after SIGTERM


class RenderError(ValueError):
    """The layout uses something this renderer does not do exactly as kustomize does."""


def load_documents(path: str) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def identity(obj: dict) -> tuple:
    return obj.get("apiVersion"), obj.get("kind"), obj.get("metadata", {}).get("name")


# --- kustomize ---------------------------------------------------------------------------------


def render(directory: str) -> list[dict]:
    path = os.path.join(directory, KUSTOMIZATION)
    (k,) = load_documents(path)
    unknown = set(k) - KNOWN_KEYS
    if unknown:
        raise RenderError(f"{path}: {sorted(unknown)} not supported by tests/k8s_render.py")
    objects: list[dict] = []
    for resource in k.get("resources", []):
        target = os.path.normpath(os.path.join(directory, resource))
        objects += render(target) if os.path.isdir(target) else load_documents(target)
    objects += generated_config_maps(directory, k)
    for patch in k.get("patches", []):
        if set(patch) != {"path"}:
            raise RenderError(f"{path}: only patches with a path (strategic merge) are supported, got {patch}")
        for doc in load_documents(os.path.join(directory, patch["path"])):
            matches = [i for i, o in enumerate(objects) if identity(o) == identity(doc)]
            if len(matches) != 1:
                raise RenderError(f"{path}: patch {patch['path']} matches {len(matches)} resources {identity(doc)}")
            objects[matches[0]] = strategic_merge(objects[matches[0]], doc)
    for image in k.get("images", []):
        objects = [set_image(o, image) for o in objects]
    return objects


def generated_config_maps(directory: str, k: dict) -> list[dict]:
    generators = k.get("configMapGenerator", [])
    if generators and not k.get("generatorOptions", {}).get("disableNameSuffixHash"):
        raise RenderError("configMapGenerator without disableNameSuffixHash: true (name hashes are not rendered here)")
    maps = []
    for gen in generators:
        if set(gen) - {"name", "files"}:
            raise RenderError(f"configMapGenerator {gen.get('name')}: only name and files are supported")
        data = {}
        for file in gen["files"]:
            with open(os.path.join(directory, file)) as f:
                data[os.path.basename(file)] = f.read()
        maps.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    return maps


def strategic_merge(base: Any, patch: Any, field: Optional[str] = None) -> Any:
    if isinstance(patch, dict):
        if any(key.startswith("$") for key in patch):
            raise RenderError(f"patch directive in {sorted(patch)} not supported")
        if not isinstance(base, dict):
            return copy.deepcopy(patch)
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = strategic_merge(base.get(key), value, key)
        return out
    if isinstance(patch, list) and isinstance(base, list) and MERGE_KEYS.get(field):
        key = MERGE_KEYS[field]
        out = copy.deepcopy(base)
        for item in patch:
            at = [i for i, b in enumerate(out) if b.get(key) == item.get(key)]
            if at:
                out[at[0]] = strategic_merge(out[at[0]], item)
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def set_image(obj: dict, image: dict) -> dict:
    obj = copy.deepcopy(obj)
    for container in pod_spec(obj).get("containers", []) + pod_spec(obj).get("initContainers", []):
        name, tag = split_image(container.get("image", ""))
        if name != image["name"]:
            continue
        name = image.get("newName", name)
        if "digest" in image:
            container["image"] = f"{name}@{image['digest']}"
        else:
            container["image"] = f"{name}:{image['newTag']}" if "newTag" in image else name + tag
    return obj


def split_image(image: str) -> tuple[str, str]:
    """("registry/name", ":tag" or "@digest" or "")."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, "@" + digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    return (image[:colon], image[colon:]) if colon > slash else (image, "")


def pod_spec(obj: dict) -> dict:
    if obj.get("kind") == "Job":
        return obj.get("spec", {}).get("template", {}).get("spec", {})
    return {}


# --- the training Job's consistency ------------------------------------------------------------


def torchrun_args(command: list[str]):
    """torchrun's own parse of the arguments after ``torchrun`` (torch.distributed.run)."""
    from torch.distributed.run import get_args_parser

    i = command.index("torchrun")
    return get_args_parser().parse_args(command[i + 1 :])


def job_problems(objects: list[dict], claims: dict[str, dict]) -> list[str]:
    """What is inconsistent in the training Job of ``objects`` (one Job, its headless Service,
    its ConfigMap), given the PersistentVolumeClaims ``claims`` by name."""
    jobs = [o for o in objects if o.get("kind") == "Job"]
    if len(jobs) != 1:
        return [f"expected one Job, found {len(jobs)}"]
    job = jobs[0]
    name, spec, pod = job["metadata"]["name"], job["spec"], pod_spec(job)
    problems = []
    containers = [c for c in pod.get("containers", []) if "torchrun" in c.get("command", []) + c.get("args", [])]
    if len(containers) != 1:
        return problems + [f"expected one container running torchrun, found {len(containers)}"]
    container = containers[0]
    command = container.get("command", []) + container.get("args", [])
    try:
        args = torchrun_args(command)
    except SystemExit:
        return problems + [f"torchrun rejects its arguments: {command}"]

    nnodes = args.nnodes
    if spec.get("completionMode") != "Indexed":
        problems.append("completionMode is not Indexed")
    if not (nnodes == str(spec.get("completions")) == str(spec.get("parallelism"))):
        problems.append(
            f"--nnodes={nnodes} but completions={spec.get('completions')} parallelism={spec.get('parallelism')}"
        )
    gpus = container.get("resources", {}).get("limits", {}).get(GPU)
    if str(gpus) != str(args.nproc_per_node):
        problems.append(f"--nproc_per_node={args.nproc_per_node} but the {GPU} limit is {gpus}")
    requested = container.get("resources", {}).get("requests", {}).get(GPU)
    if requested is not None and str(requested) != str(gpus):
        problems.append(f"{GPU} request {requested} differs from its limit {gpus}")

    # rendezvous: c10d at pod 0's DNS name under the headless Service
    services = [o for o in objects if o.get("kind") == "Service" and o["metadata"]["name"] == pod.get("subdomain")]
    if args.rdzv_backend != "c10d":
        problems.append(f"--rdzv_backend={args.rdzv_backend}, not c10d")
    if not services:
        problems.append(f"no Service named like the pod template's subdomain {pod.get('subdomain')!r}")
    else:
        service = services[0]["spec"]
        if service.get("clusterIP") != "None":
            problems.append("the Service is not headless (clusterIP: None)")
        pod_labels = {
            **job["spec"]["template"].get("metadata", {}).get("labels", {}),
            "job-name": name,
            "batch.kubernetes.io/job-name": name,
        }  # set by the Job controller
        selector = service.get("selector", {})
        if not selector or any(pod_labels.get(k) != v for k, v in selector.items()):
            problems.append(f"the Service's selector {selector} does not select the Job's pods {pod_labels}")
        port = args.rdzv_endpoint.rsplit(":", 1)[1] if ":" in args.rdzv_endpoint else None
        if port not in {str(p.get("port")) for p in service.get("ports", [])}:
            problems.append(f"rendezvous port {port} is not a port of the Service")
        expected = f"{name}-0.{pod.get('subdomain')}"
        if args.rdzv_endpoint.rsplit(":", 1)[0] != expected:
            problems.append(f"--rdzv_endpoint={args.rdzv_endpoint}, but pod 0 of Job {name} is {expected}")
    if args.rdzv_id != name:
        problems.append(f"--rdzv_id={args.rdzv_id}, not the Job's name {name}")
    if not (args.module and args.training_script == "training"):
        problems.append("torchrun does not run -m training")

    # restarts: torchrun's, then the Job's
    if spec.get("backoffLimit", 6) < int(nnodes):
        problems.append(f"backoffLimit {spec.get('backoffLimit')} < --nnodes={nnodes}: losing pod 0 fails every pod")
    if pod.get("restartPolicy") != "Never":
        problems.append("restartPolicy is not Never")
    rules = spec.get("podFailurePolicy", {}).get("rules", [])
    if not any(
        r["action"] == "Ignore" and any(c["type"] == "DisruptionTarget" for c in r.get("onPodConditions", []))
        for r in rules
    ):
        problems.append("podFailurePolicy does not ignore DisruptionTarget (preemption, eviction, drain)")
    if not any(
        r["action"] == "Ignore"
        and EXIT_STOPPED in r.get("onExitCodes", {}).get("values", [])
        and r["onExitCodes"].get("operator") == "In"
        for r in rules
    ):
        problems.append(f"podFailurePolicy does not ignore exit code {EXIT_STOPPED} (a clean stop to resume)")
    if pod.get("terminationGracePeriodSeconds", 30) <= TORCHRUN_WORKER_KILL_S:
        problems.append(f"terminationGracePeriodSeconds <= {TORCHRUN_WORKER_KILL_S}: no time to checkpoint")
    env = {e["name"]: e for e in container.get("env", [])}
    field = env.get("NODE_RANK", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
    if field != f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']":
        problems.append("NODE_RANK is not the completion index (downward API)")

    # volumes: data_dir and output_dir on a ReadWriteMany claim, /dev/shm in memory, the launcher
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = container.get("volumeMounts", [])
    overrides = dict(a.split("=", 1) for a in args.training_script_args if "=" in a)
    for key in ("data_dir", "output_dir"):
        path = overrides.get(key)
        mount = mount_of(path, mounts) if path else None
        claim = volumes.get(mount["name"], {}).get("persistentVolumeClaim", {}).get("claimName") if mount else None
        if path is None:
            problems.append(f"no {key}= override")
        elif claim is None:
            problems.append(f"{key}={path} is not on a PersistentVolumeClaim mount")
        elif claim not in claims:
            problems.append(f"{key}={path}: claim {claim} is not defined in infra/k8s/storage")
        elif "ReadWriteMany" not in claims[claim]["spec"].get("accessModes", []):
            problems.append(f"{key}={path}: claim {claim} is not ReadWriteMany")
        elif key == "output_dir" and mount.get("readOnly"):
            problems.append(f"output_dir={path} is mounted read-only")
    shm = next((m for m in mounts if m["mountPath"] == "/dev/shm"), None)
    if not shm or volumes.get(shm["name"], {}).get("emptyDir", {}).get("medium") != "Memory":
        problems.append("/dev/shm is not a memory emptyDir")
    launcher = container.get("command", [])[1:2]
    mount = mount_of(launcher[0], mounts) if launcher else None
    config_map = volumes.get(mount["name"], {}).get("configMap", {}).get("name") if mount else None
    maps = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "ConfigMap"}
    file = os.path.relpath(launcher[0], mount["mountPath"]) if mount else None
    if config_map not in maps or file not in maps[config_map].get("data", {}):
        problems.append(f"the launcher {launcher} is not a file of a ConfigMap in the layout")

    problems += batch_problems(args.training_script_args, int(nnodes) * int(args.nproc_per_node))
    return problems


def mount_of(path: str, mounts: list[dict]) -> Optional[dict]:
    """The volume mount ``path`` lies under (the longest mountPath that is a prefix)."""
    under = [m for m in mounts if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")]
    return max(under, key=lambda m: len(m["mountPath"])) if under else None


def batch_problems(overrides: list[str], world_size: int) -> list[str]:
    """The trainer's config composed from ``overrides`` (as ``python -m training`` would) must split
    its global batch over ``world_size`` ranks."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from training.config import ConfigError, register_configs, to_train_config
    from training.deepspeed_config import gradient_accumulation_steps

    register_configs()
    try:
        with initialize_config_dir(config_dir=TRAINING_CONF, version_base="1.3"):
            cfg = to_train_config(compose(config_name="train", overrides=list(overrides)))
        gradient_accumulation_steps(cfg.trainer.global_batch_size, cfg.data.micro_batch_size, world_size)
    except (ConfigError, HydraException) as e:
        return [f"the trainer's config over {world_size} ranks: {e}"]
    return []
