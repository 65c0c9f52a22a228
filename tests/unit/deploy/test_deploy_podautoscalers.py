"""The cluster-mode kustomize component (deploy/kubernetes/podautoscalers/): the CRD, its
RBAC (exactly the calls of autoscalerd/kube/podautoscalers.py) and the Deployment patch.

The CRD's schema is checked against what it must accept (every example policy of the
repository as an object, as AIbrix users apply them) and what the daemon writes (a status
from `build_status`), with jsonschema on its openAPIV3Schema.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoscalerd.cli import build_parser
from autoscalerd.config.pod_autoscaler_object import policy_from_object
from autoscalerd.daemon.cluster_policies import Verdict
from autoscalerd.daemon.status_writer import Observation, ScalingHistory, build_status

REPO = Path(__file__).resolve().parents[3]
KDIR = REPO / "deploy" / "kubernetes"
PDIR = KDIR / "podautoscalers"
EXAMPLES = sorted((REPO / "config" / "examples").glob("*.yaml"))
MANIFESTS = sorted(p for p in PDIR.glob("*.yaml") if p.name != "kustomization.yaml")


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _crd() -> dict[str, Any]:
    (crd,) = _docs(PDIR / "crd.yaml")
    return crd


def _schema() -> dict[str, Any]:
    (version,) = _crd()["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"])


def test_component_lists_every_manifest_and_is_a_component() -> None:
    k = yaml.safe_load((PDIR / "kustomization.yaml").read_text())
    assert (k["apiVersion"], k["kind"]) == ("kustomize.config.k8s.io/v1alpha1", "Component")
    assert sorted(k["resources"]) == [p.name for p in MANIFESTS]
    base = yaml.safe_load((KDIR / "kustomization.yaml").read_text())
    assert "podautoscalers" not in str(base), "the base stays file-only"


def test_the_patch_turns_cluster_mode_on_with_the_documented_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    k = yaml.safe_load((PDIR / "kustomization.yaml").read_text())
    (patch,) = k["patches"]
    (op,) = yaml.safe_load(patch["patch"])
    assert op["path"] == "/spec/template/spec/containers/0/env/-"
    assert op["value"] == {"name": "AUTOSCALERD_PODAUTOSCALERS", "value": "1"}
    monkeypatch.setenv(op["value"]["name"], op["value"]["value"])
    assert build_parser().parse_args(["run"]).podautoscalers is True


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_matches_the_kubernetes_openapi_schema(path: Path) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    for doc in _docs(path):
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "autoscalerd"
        for version in sorted({"1.29.0", kv.latest_version()}):
            kv.validate(doc, version, strict=True)


def test_crd_names_and_printer_columns() -> None:
    crd = _crd()
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "podautoscalers.autoscaling.aibrix.ai"
    assert (spec["group"], spec["scope"], spec["names"]["kind"]) == (
        "autoscaling.aibrix.ai",
        "Namespaced",
        "PodAutoscaler",
    )
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["STRATEGY", "MIN", "MAX", "DESIRED", "ACTUAL", "READY", "AGE"]


def _validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    return jsonschema.Draft7Validator(_schema(), format_checker=jsonschema.FormatChecker())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_policy_applies_as_an_object(path: Path) -> None:
    validator = _validator()
    for doc in _docs(path):
        if doc.get("kind") != "PodAutoscaler":
            continue
        errors = [e.message for e in validator.iter_errors(doc)]
        assert errors == []


def test_the_crd_refuses_what_aibrix_refuses() -> None:
    validator = _validator()
    (doc, *_) = [d for d in _docs(EXAMPLES[0]) if d.get("kind") == "PodAutoscaler"]
    bad = {**doc, "spec": {**doc["spec"], "scalingStrategy": "kpa"}}
    assert list(validator.iter_errors(bad))
    missing = {**doc, "spec": {k: v for k, v in doc["spec"].items() if k != "maxReplicas"}}
    assert list(validator.iter_errors(missing))


@pytest.mark.parametrize("state", ["active", "invalid", "clash"])
def test_the_status_the_daemon_writes_fits_the_schema(state: str) -> None:
    validator = _validator()
    (doc, *_) = [d for d in _docs(EXAMPLES[0]) if d.get("kind") == "PodAutoscaler"]
    policy, _ = policy_from_object(doc)
    verdict = Verdict("ns", "pa", "uid", 3, state, policy, "InvalidBounds", "spec.x: bad")
    history = ScalingHistory()
    obs = Observation(desired=3, actual=2, reason="stable")
    history.see(obs, 1_767_225_600.0, first=True)
    obs = Observation(
        desired=3,
        actual=3,
        last_scale={"time": "2026-01-01T00:00:10Z", "from": 2, "to": 3, "reason": "stable"},
    )
    history.see(obs, 1_767_225_610.0)
    status = build_status(verdict, obs, None, history, 1_767_225_610.0, desired=3)
    written = {k: v for k, v in status.items() if v is not None}
    errors = [e.message for e in validator.iter_errors({**doc, "status": written})]
    assert errors == []


def _podautoscaler_calls() -> set[tuple[str, str, str]]:
    tree = ast.parse((REPO / "autoscalerd" / "kube" / "podautoscalers.py").read_text())
    calls: set[tuple[str, str, str]] = set()
    helper_verbs: set[str] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
        first = node.args[0]
        if name == "_op" and isinstance(first, ast.Constant):
            helper_verbs.add(str(first.value))
        if name == "Op":
            resource, group = node.args[1], node.args[2]
            assert isinstance(resource, ast.Constant) and isinstance(group, ast.Constant)
            verb = first.value if isinstance(first, ast.Constant) else None
            if verb is None:
                calls.add((str(group.value), str(resource.value), "<helper>"))
            else:
                calls.add((str(group.value), str(resource.value), str(verb)))
    out = set()
    for group, resource, verb in calls:
        if verb == "<helper>":
            out |= {(group, resource, v) for v in helper_verbs}
        else:
            out.add((group, resource, verb))
    return out


def test_rbac_grants_exactly_the_calls_of_cluster_mode() -> None:
    calls = _podautoscaler_calls()
    assert calls == {
        ("autoscaling.aibrix.ai", "podautoscalers", "list"),
        ("autoscaling.aibrix.ai", "podautoscalers", "watch"),
        ("autoscaling.aibrix.ai", "podautoscalers/status", "patch"),
    }
    docs = _docs(PDIR / "rbac.yaml")
    (role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    granted = {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert granted == calls
    (binding,) = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "autoscalerd", "namespace": "autoscalerd-system"}
    ]


def test_kubectl_kustomize_builds_an_overlay_with_the_component(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{os.path.relpath(KDIR, overlay)}]\n"
        f"components: [{os.path.relpath(PDIR, overlay)}]\n"
    )
    done = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    built = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(done.stdout) if d}
    assert ("CustomResourceDefinition", "podautoscalers.autoscaling.aibrix.ai") in built
    assert ("ClusterRole", "autoscalerd-podautoscalers") in built
    (container,) = built[("Deployment", "autoscalerd")]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["AUTOSCALERD_PODAUTOSCALERS"] == "1"
