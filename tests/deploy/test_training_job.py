"""deploy/training/train-job.yaml: the data-parallel training Job, schema-checked offline and wired.

Every object is validated against the Kubernetes OpenAPI schemas (kubernetes-validate, strict) for
the oldest and newest versions we support. Then the wiring a schema cannot see: one pod per
`--cluster` address, each address the DNS name the headless Service gives that pod
(`<job>-<index>.<service>:<port>`), the port the pods listen on, each pod's index from the Job's
completion index, and the container's arguments as the real `candidates train` parser reads them.
"""

from __future__ import annotations

import argparse
import copy
import re
from pathlib import Path

import pytest
import yaml

from trainer.training import distributed

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "training" / "train-job.yaml"
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
INDEX_ANNOTATION = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


@pytest.fixture(scope="module")
def objects() -> dict[str, dict]:
    docs = [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]
    by_kind = {doc["kind"]: doc for doc in docs}
    assert len(by_kind) == len(docs) == 2, "one Service and one Job expected"
    return by_kind


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_for_kubernetes(objects, version):
    import kubernetes_validate

    assert set(objects) == {"Service", "Job"}
    for kind, doc in objects.items():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{kind} {doc['metadata']['name']} is not valid for Kubernetes {version}: {error.message}")


def _train_args(job: dict) -> tuple[dict, argparse.Namespace]:
    from homefeed_cli.cli import build_parser

    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container.get("env", [])}
    # Kubernetes expands $(NAME) from the container's own env: stand in each index it can get.
    args = [re.sub(r"\$\((\w+)\)", lambda m: "0" if m.group(1) in env else m.group(0), a) for a in container["args"]]
    return container, build_parser().parse_args(args)


def wiring_problems(objects: dict[str, dict]) -> list[str]:
    """What keeps the workers from finding each other or training (empty: nothing)."""
    problems = []
    service, job = objects["Service"], objects["Job"]
    spec = job["spec"]
    pod = spec["template"]
    container, args = _train_args(job)
    addresses = args.cluster.split(",") if args.cluster else []
    try:
        distributed.tf_config(addresses, 0)
    except ValueError as error:
        problems.append(f"--cluster: {error}")
    if spec.get("completionMode") != "Indexed":
        problems.append("the Job is not Indexed: pods get no worker index")
    if not spec.get("completions") == spec.get("parallelism") == len(addresses):
        problems.append(
            f"completions {spec.get('completions')} / parallelism {spec.get('parallelism')} != "
            f"{len(addresses)} --cluster addresses: every worker must run at once"
        )
    if service["spec"].get("clusterIP") != "None":
        problems.append("the Service is not headless: pods get no DNS names")
    if pod["spec"].get("subdomain") != service["metadata"]["name"]:
        problems.append(f"pod subdomain {pod['spec'].get('subdomain')!r} is not the Service's name")
    labels = pod["metadata"].get("labels", {})
    if not service["spec"]["selector"].items() <= labels.items():
        problems.append("the Service's selector does not pick the Job's pods")
    service_ports = {p["port"] for p in service["spec"]["ports"]}
    container_ports = {p["containerPort"] for p in container.get("ports", [])}
    for index, address in enumerate(addresses):
        host, _, port = address.rpartition(":")
        expected = f"{job['metadata']['name']}-{index}.{service['metadata']['name']}"
        if host != expected:
            problems.append(f"--cluster address {index} host {host!r} is not pod {index}'s name {expected!r}")
        if int(port) not in service_ports or int(port) not in container_ports:
            problems.append(f"--cluster address {index} port {port} is not the Service's and container's port")
    index_vars = [
        e["name"]
        for e in container.get("env", [])
        if e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == INDEX_ANNOTATION
    ]
    if not any(f"--worker-index=$({name})" in container["args"] for name in index_vars):
        problems.append("--worker-index is not the pod's completion index")
    if spec.get("backoffLimit") != 0:
        problems.append("a failed worker is retried alone while the others wait: backoffLimit must be 0")
    mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
    for flag in ("transformed", "out"):
        if not any(Path(getattr(args, flag)).is_relative_to(m) for m in mounts):
            problems.append(f"--{flag} {getattr(args, flag)} is not on a mounted volume")
    return problems


def test_the_workers_find_each_other_and_train(objects):
    assert wiring_problems(objects) == []
    _, args = _train_args(objects["Job"])
    assert args.handler.__name__ == "run_train"


@pytest.mark.parametrize(
    "break_it",
    [
        lambda o: o["Job"]["spec"].update(completions=3, parallelism=3),
        lambda o: o["Job"]["spec"]["template"]["spec"].update(subdomain="elsewhere"),
        lambda o: o["Service"]["spec"]["ports"][0].update(port=2223),
        lambda o: o["Job"]["spec"]["template"]["spec"]["containers"][0]["args"].remove(
            "--worker-index=$(WORKER_INDEX)"
        ),
        lambda o: o["Job"]["spec"].pop("completionMode"),
    ],
    ids=["more-pods-than-addresses", "wrong-subdomain", "wrong-port", "no-index", "not-indexed"],
)
def test_the_wiring_check_catches_a_broken_job(objects, break_it):
    broken = copy.deepcopy(objects)
    break_it(broken)
    assert wiring_problems(broken)
