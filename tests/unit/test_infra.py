"""The cluster recipes under infra/ agree with the package: the worker image's Beam is the Beam this
package pins (and runs here), its environment the local workers' malloc settings, its requirements
what the data job imports, with pyproject.toml's specifiers."""

import ast
import importlib.metadata
import os
import re
import sys

import tomllib
from packaging.requirements import Requirement

from paths import REPO

WORKER = os.path.join(REPO, "infra", "worker")


def dockerfile() -> str:
    return open(os.path.join(WORKER, "Dockerfile"), encoding="utf-8").read()


def package_requirements() -> dict[str, Requirement]:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    return {Requirement(d).name: Requirement(d) for d in deps}


def worker_requirements() -> dict[str, Requirement]:
    lines = open(os.path.join(WORKER, "requirements.txt"), encoding="utf-8").read().splitlines()
    return {r.name: r for r in (Requirement(x) for x in lines if x.strip() and not x.startswith("#"))}


def test_the_worker_image_runs_the_beam_version_the_package_pins():
    arg = re.search(r"^ARG BEAM_VERSION=(\S+)$", dockerfile(), re.M).group(1)
    assert re.search(r"^FROM apache/beam_python\$\{PYTHON_VERSION\}_sdk:\$\{BEAM_VERSION\}$", dockerfile(), re.M)
    pin = package_requirements()["apache-beam"]
    (spec,) = pin.specifier
    assert spec.operator == "==", f"pyproject.toml must pin Beam exactly (launcher = workers), has {pin}"
    assert spec.version == arg == importlib.metadata.version("apache-beam")
    python = re.search(r"^ARG PYTHON_VERSION=(\S+)$", dockerfile(), re.M).group(1)
    assert python == f"{sys.version_info.major}.{sys.version_info.minor}"  # the Python tested here


def test_the_training_image_runs_the_torch_this_project_is_tested_with():
    training_image = open(os.path.join(REPO, "infra", "k8s", "Dockerfile"), encoding="utf-8").read()
    image_torch = re.search(r"^ARG TORCH_VERSION=(\S+)$", training_image, re.M).group(1)
    ci = open(os.path.join(REPO, ".ci", "run"), encoding="utf-8").read()
    (ci_torch,) = re.findall(r"pip install -q torch==(\S+)", ci)
    assert image_torch == ci_torch == importlib.metadata.version("torch").split("+")[0]
    assert 'pip install --no-cache-dir "torch==${TORCH_VERSION}"' in training_image


def test_the_worker_image_sets_the_local_workers_malloc_settings():
    from pipeline.runner import WORKER_MALLOC_ENV

    env = dict(re.findall(r"(MALLOC_\w+)=(\S+)", dockerfile()))
    assert env == WORKER_MALLOC_ENV


def third_party_imports(package_dir: str) -> set[str]:
    """Top-level modules the package imports at module level or inside functions, stdlib excluded."""
    names = set()
    for root, _, files in os.walk(package_dir):
        for name in files:
            if name.endswith(".py"):
                tree = ast.parse(open(os.path.join(root, name), encoding="utf-8").read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        names |= {a.name.split(".")[0] for a in node.names}
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != os.path.basename(package_dir)}


def test_the_worker_requirements_cover_the_data_jobs_imports_with_the_packages_specifiers():
    worker, package = worker_requirements(), package_requirements()
    for name, req in worker.items():
        assert name in package and str(req.specifier) == str(package[name].specifier), (req, package.get(name))
    distributions = importlib.metadata.packages_distributions()
    # gensim: the embedded sample corpus only (the `sample` extra); matplotlib: pipeline.report,
    # which reads finished shards on the user's machine. Neither is imported on a worker.
    optional = {"gensim", "matplotlib"}
    needed = set()
    for module in third_party_imports(os.path.join(REPO, "pipeline")) - optional:
        needed |= {Requirement(d).name.lower() for d in distributions[module]}
    provided = {n.lower() for n in worker} | {"apache-beam"}  # the SDK image's own
    assert needed <= provided, f"the worker image lacks {sorted(needed - provided)}"


def test_the_dataflow_job_is_built_and_serialised_locally(tmp_path):
    """The Dataflow recipe up to the point where it would contact Google Cloud: Beam's DataflowRunner
    translates the job (``--dry_run``) into the Runner v2 pipeline it would submit, with the worker
    image as the SDK environment. Inputs are named, not listed (listing gs:// needs credentials)."""
    import apache_beam as beam

    from conftest import compose_pipeline_config
    from pipeline.run import build
    from pipeline.runner import beam_options

    image = "europe-west4-docker.pkg.dev/my-project/repo/bert-pretrain-worker:0.1.0"
    cfg, resolved = compose_pipeline_config(
        [
            "output_dir=gs://my-bucket/shards",
            "inputs=[gs://my-bucket/enwiki/enwiki-pages-articles1.xml.bz2]",
            "runner=dataflow",
            "runner.project=my-project",
            "runner.region=europe-west4",
            "runner.temp_location=gs://my-bucket/tmp",
            "runner.setup_file=null",
            "runner.max_num_workers=64",
            f"runner.sdk_container_image={image}",
            "runner.extra=['--dry_run=True']",
        ]
    )
    pipeline = beam.Pipeline(options=beam_options(cfg.runner, cfg.log_level))
    build(pipeline, cfg, list(cfg.inputs), resolved, None, "gs://my-bucket/shards/.temp-test")
    job = pipeline.run().job  # dry run: translated, not submitted
    transforms = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    assert {
        "ReadSources",
        "PrepareDocuments",
        "TrainVocabulary",
        "Tokenize",
        "CreateExamples",
        "WriteOutputs",
        "WriteOutputs/WriteExamples",
        "WriteOutputs/Finalize",
    } <= transforms
    environments = [e.payload for e in job.proto_pipeline.components.environments.values()]
    assert any(image.encode() in payload for payload in environments)
    options = job.options.get_all_options()
    assert (options["project"], options["region"], options["max_num_workers"]) == ("my-project", "europe-west4", 64)
    path = tmp_path / "dataflow_job.json"
    path.write_text(job.json())  # what --dataflow_job_file would hold
    assert '"JOB_TYPE_BATCH"' in path.read_text()
