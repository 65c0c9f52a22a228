"""The in-cluster deployment files: deploy/kubernetes/*.yaml and deploy/Dockerfile.

- Every manifest parses and validates against the Kubernetes OpenAPI schemas
  (kubernetes-validate ships them, so this runs offline; skipped when it is not installed).
- RBAC grants exactly the API calls the daemon makes: derived from the `Op(...)` calls in
  autoscalerd/kube, so a new call without a rule (or a rule nothing uses) fails here.
- The Deployment is hardened, its probes reach /healthz and /readyz on the listen port, its
  arguments parse with the real command line, and the ConfigMap's policies load.
- `kubectl kustomize` and `kubectl apply --dry-run=client` when kubectl is on PATH (against
  a stand-in API server that answers discovery only: client dry-run needs discovery).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoscalerd.cli import build_parser
from autoscalerd.config.load import load_config

REPO = Path(__file__).resolve().parents[3]
KDIR = REPO / "deploy" / "kubernetes"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
SEED = REPO / "config" / "examples" / "metrics-server-kpa.yaml"
KUBE_PKG = REPO / "autoscalerd" / "kube"
NAMESPACE = "autoscalerd-system"
SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
MANIFESTS = sorted(p for p in KDIR.glob("*.yaml") if p.name != "kustomization.yaml")
SCALE_KINDS = ("deployments", "statefulsets", "replicasets")
"""apps kinds whose /scale the shipped ClusterRole covers; others are user-added rules."""


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _all_docs() -> list[dict[str, Any]]:
    return [d for p in MANIFESTS for d in _docs(p)]


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d
        for d in _all_docs()
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def _container() -> dict[str, Any]:
    (container,) = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _run_args() -> Any:
    return build_parser().parse_args(_container()["args"])


# -- parsing and schemas ---------------------------------------------------------------


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_parses_with_the_basics(path: Path) -> None:
    docs = _docs(path)
    assert docs, f"{path.name} is empty"
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys()
        meta = doc["metadata"]
        assert meta["name"]
        assert meta.get("labels", {}).get("app.kubernetes.io/name") == "autoscalerd"
        if doc["kind"] not in {"Namespace", "ClusterRole", "ClusterRoleBinding"}:
            assert meta.get("namespace") == NAMESPACE, f"{doc['kind']} {meta['name']}"


def test_kustomization_lists_every_manifest() -> None:
    kust = yaml.safe_load((KDIR / "kustomization.yaml").read_text())
    assert kust["kind"] == "Kustomization"
    assert sorted(kust["resources"]) == sorted(p.name for p in MANIFESTS)
    assert kust["resources"][0] == "namespace.yaml", "the namespace first"


@pytest.fixture(scope="module")
def kubernetes_validate() -> Any:
    return pytest.importorskip("kubernetes_validate")


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_matches_the_kubernetes_openapi_schema(
    path: Path, kubernetes_validate: Any
) -> None:
    # The oldest minor still commonly run by managed clusters, and the newest shipped.
    # Schemas are bundled in the package: no network.
    versions = sorted({"1.29.0", kubernetes_validate.latest_version()})
    for doc in _docs(path):
        for version in versions:
            kubernetes_validate.validate(doc, version, strict=True)


def test_schema_validation_catches_a_mistake(kubernetes_validate: Any) -> None:
    deployment = json.loads(json.dumps(_one("Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = (
        "/healthz"
    )
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


# -- RBAC: exactly the calls in autoscalerd/kube --------------------------------------


def _const(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        # f"{plural}/scale" -> "*/scale": any resource's scale subresource.
        parts = [v.value if isinstance(v, ast.Constant) else "*" for v in node.values]
        return "".join(str(p) for p in parts)
    return None


def code_api_calls() -> set[tuple[str, str, str]]:
    """(group, resource, verb) of every `Op(verb, resource, group, ...)` in autoscalerd/kube.

    Handles literal calls and the `_op(verb)` helper pattern (`def _op(self, verb): return
    Op(verb, "pods", "", ...)` plus `self._op("list")` calls in the same file). Discovery
    and /version (non-resource GETs every authenticated identity may make) are left out.
    """
    calls: set[tuple[str, str, str]] = set()
    for path in sorted(KUBE_PKG.glob("*.py")):
        tree = ast.parse(path.read_text())
        helpers: dict[str, tuple[str, str]] = {}
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef):
                continue
            params = [a.arg for a in fn.args.args]
            for node in ast.walk(fn):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id == "Op"
                    and isinstance(node.args[0], ast.Name)
                    and node.args[0].id in params
                ):
                    resource, group = _const(node.args[1]), _const(node.args[2])
                    assert resource is not None and group is not None, ast.dump(node)
                    helpers[fn.name] = (group, resource)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            verb = _const(node.args[0])
            if verb is None:
                continue
            if name == "Op":
                resource = _const(node.args[1])
                assert resource is not None, ast.dump(node)
                if resource.startswith(("discovery", "/")):
                    continue
                # A group from a variable (the scale target's) is any group: "*".
                group = _const(node.args[2]) if len(node.args) > 2 else ""
                group = "*" if group is None else group
                calls.add((group, resource, verb))
            elif name in helpers:
                calls.add((*helpers[name], verb))
    return calls


def test_the_code_scan_finds_the_calls_we_know_about() -> None:
    calls = code_api_calls()
    # A guard against the scan silently finding nothing after a refactor.
    assert ("", "pods", "watch") in calls
    assert ("coordination.k8s.io", "leases", "create") in calls
    assert ("", "events", "create") in calls
    assert any(r == "*/scale" for _, r, _ in calls)


def _granted(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    out = set()
    for rule in rules:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for verb in rule["verbs"]:
                    out.add((group, resource, verb))
    return out


def test_rbac_grants_exactly_the_verbs_the_code_uses() -> None:
    calls = code_api_calls()
    assert {g for g, r, _ in calls if r == "*/scale"} == {"*"}, "any target's group"
    scale_verbs = {v for _, r, v in calls if r == "*/scale"}
    lease_calls = {c for c in calls if c[1] == "leases"}
    expected_cluster = {c for c in calls if c[1] not in ("*/scale", "leases")}
    # cluster mode's calls are granted by its component (test_deploy_podautoscalers.py)
    expected_cluster = {c for c in expected_cluster if not c[1].startswith("podautoscalers")}
    expected_cluster |= {("apps", f"{k}/scale", v) for k in SCALE_KINDS for v in scale_verbs}

    cluster = _one("ClusterRole", "autoscalerd")
    assert _granted(cluster["rules"]) == expected_cluster
    for rule in cluster["rules"]:
        assert "*" not in rule["verbs"] + rule["apiGroups"]
        if "*" in rule["resources"]:  # these groups' resources are metric names (issue 12)
            assert set(rule["apiGroups"]) <= {"custom.metrics.k8s.io", "external.metrics.k8s.io"}
        assert "resourceNames" not in rule

    role = _one("Role", "autoscalerd-leader-election")
    assert _granted(role["rules"]) == lease_calls
    named = [r for r in role["rules"] if r.get("resourceNames")]
    lease_name = _configmap_config().daemon.leader_election.lease_name
    assert all(r["resourceNames"] == [lease_name] for r in named)
    assert {v for r in named for v in r["verbs"]} == {v for _, _, v in lease_calls} - {"create"}


def test_metrics_reader_is_a_separate_non_resource_cluster_role() -> None:
    reader = _one("ClusterRole", "autoscalerd-metrics-reader")
    assert reader["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]


def test_bindings_bind_the_service_account() -> None:
    sa = _one("ServiceAccount")
    subject = {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
    pairs = {
        "ClusterRoleBinding": "ClusterRole",
        "RoleBinding": "Role",
    }
    bound = set()
    for doc in _all_docs():
        if doc["kind"] in pairs:
            assert doc["subjects"] == [subject]
            assert doc["roleRef"]["kind"] == pairs[doc["kind"]]
            _one(doc["roleRef"]["kind"], doc["roleRef"]["name"])
            bound.add(doc["roleRef"]["name"])
    assert bound == {"autoscalerd", "autoscalerd-metrics-reader", "autoscalerd-leader-election"}
    assert (
        _one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
        == (sa["metadata"]["name"])
    )


# -- Deployment --------------------------------------------------------------------------


def test_deployment_runs_two_leader_elected_replicas_in_cluster() -> None:
    deployment = _one("Deployment")
    assert deployment["spec"]["replicas"] == 2
    args = _run_args()
    assert args.command == "run"
    assert args.leader_elect and args.in_cluster
    assert args.config == ["/etc/autoscalerd"]
    assert args.listen.startswith("0.0.0.0:"), "probes and scrapes come from outside the pod"
    env = {e["name"]: e for e in _container()["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_probes_hit_healthz_and_readyz_on_the_listen_port() -> None:
    container = _container()
    port = int(_run_args().listen.rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert ports.get(get["port"], get["port"]) == port
        assert get.get("scheme", "HTTP") == "HTTP"


def test_deployment_security_context() -> None:
    pod = _one("Deployment")["spec"]["template"]["spec"]
    container = _container()
    psc, csc = pod["securityContext"], container["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert csc["runAsNonRoot"] is True
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert csc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert csc.get("privileged", False) is False
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]
    namespace = _one("Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_config_is_mounted_read_only_and_the_token_is_the_default_projection() -> None:
    pod = _one("Deployment")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in _container()["volumeMounts"]}
    config = mounts["/etc/autoscalerd"]
    assert config["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    cm = _one("ConfigMap")
    assert volumes[config["name"]]["configMap"]["name"] == cm["metadata"]["name"]
    assert pod.get("automountServiceAccountToken", True) is True
    assert _one("ServiceAccount").get("automountServiceAccountToken", True) is True
    assert not any(m.startswith("/var/run/secrets") for m in mounts), "the default projection"


# -- ConfigMap ---------------------------------------------------------------------------


def _configmap_config(tmp: Path | None = None) -> Any:
    import tempfile

    data = _one("ConfigMap")["data"]
    with tempfile.TemporaryDirectory() as d:
        for name, text in data.items():
            (Path(d) / name).write_text(text)
        return load_config([d])


def test_configmap_holds_the_seed_policy_plus_its_source_settings() -> None:
    """The seed verbatim, plus tlsConfig/authorization on its own source (and nowhere else)."""
    data = _one("ConfigMap")["data"]
    assert all(name.endswith((".yaml", ".yml")) for name in data), "the daemon reads *.yaml"
    shipped = _configmap_config().policies[0]
    seed = load_config([str(SEED)]).policies[0]
    source = shipped.sources[0]
    assert (
        dataclasses.replace(source, tls=seed.sources[0].tls, authorization=None) == seed.sources[0]
    )
    assert dataclasses.replace(shipped, sources=seed.sources) == seed
    assert source.tls.insecure_skip_verify is True
    assert source.authorization is not None and source.authorization.credentials_file == SA_TOKEN


def test_configmap_policies_validate() -> None:
    config = _configmap_config()
    assert [p.key for p in config.policies] == ["kube-system/metric-server-autoscaler"]
    daemon = config.daemon
    le = daemon.leader_election
    assert (le.lease_duration_seconds, le.renew_deadline_seconds, le.retry_period_seconds) == (
        15.0,
        10.0,
        2.0,
    )
    assert le.lease_namespace is None, "the pod's namespace, where the Role is"
    # No daemon-wide token or TLS bypass: they would apply to every policy added later.
    assert daemon.authorization is None
    assert daemon.tls.insecure_skip_verify is None


# -- Service -----------------------------------------------------------------------------


def test_service_exposes_our_metrics_for_annotation_based_scraping() -> None:
    service = _one("Service")
    port = int(_run_args().listen.rsplit(":", 1)[1])
    ann = service["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert ann["prometheus.io/port"] == str(port)
    assert ann["prometheus.io/path"] == "/metrics"
    (sp,) = service["spec"]["ports"]
    container_ports = {p["name"]: p["containerPort"] for p in _container()["ports"]}
    assert container_ports[sp["targetPort"]] == port
    labels = _one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


# -- Dockerfile --------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in _instructions():
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def test_dockerfile_is_multi_stage_and_slim() -> None:
    stages = _stages()
    assert len(stages) >= 2
    build, final = stages[0], stages[-1]
    assert " AS " in build[0][1].upper()
    args = dict(a[1].split("=", 1) for a in _instructions() if a[0] == "ARG" and "=" in a[1])
    major, minor = (int(x) for x in args["PYTHON_VERSION"].split(".")[:2])
    assert (major, minor) >= (3, 11), "pyproject: requires-python >= 3.11"
    assert "slim" in final[0][1]
    assert any("pip wheel" in rest for word, rest in build if word == "RUN")
    final_runs = " ".join(rest for word, rest in final if word == "RUN")
    assert "from=build" in final_runs, "installs the wheels built in the first stage"
    assert "--no-index" in final_runs
    for tool in ("apt-get", "gcc", "build-essential", "git "):
        assert tool not in final_runs, f"no build tools in the final image: {tool}"
    copies = [rest for word, rest in final if word == "COPY"]
    assert not copies, "the final stage copies nothing: the wheels are bind-mounted"


def test_dockerfile_pip_never_caches() -> None:
    for word, rest in _instructions():
        if word == "RUN" and re.search(r"\bpip (install|wheel)\b", rest):
            assert "--no-cache-dir" in rest, rest


def test_dockerfile_runs_as_a_numeric_non_root_user() -> None:
    final = _stages()[-1]
    users = [rest for word, rest in final if word == "USER"]
    assert users, "USER in the final stage"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, "numeric, so runAsNonRoot can be checked"
    assert not gid or (gid.isdigit() and int(gid) > 0)
    pod = _one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid)


def test_dockerfile_entrypoint_and_cmd_parse_with_the_cli() -> None:
    final = dict((w, r) for w, r in _stages()[-1] if w in ("ENTRYPOINT", "CMD"))
    assert json.loads(final["ENTRYPOINT"]) == ["autoscalerd"]
    cmd = json.loads(final["CMD"])
    args = build_parser().parse_args(cmd)
    assert args.command == "run" and args.in_cluster and args.config == ["/etc/autoscalerd"]


def test_dockerfile_copies_only_what_dockerignore_lets_in() -> None:
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for word, rest in _stages()[0]:
        if word == "COPY":
            *sources, _dest = rest.split()
            for src in sources:
                assert src.rstrip("/") in allowed, f"{src} is excluded by .dockerignore"
                assert (REPO / src).exists(), src


# -- kubectl -----------------------------------------------------------------------------

# What the stand-in API server advertises: (group, version, plural, kind, namespaced).
_DISCOVERY = [
    ("", "v1", "namespaces", "Namespace", False),
    ("", "v1", "serviceaccounts", "ServiceAccount", True),
    ("", "v1", "configmaps", "ConfigMap", True),
    ("", "v1", "services", "Service", True),
    ("apps", "v1", "deployments", "Deployment", True),
    ("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    ("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
]


def _discovery_docs() -> dict[str, Any]:
    verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
    docs: dict[str, Any] = {
        "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
        "/version": {"major": "1", "minor": "33", "gitVersion": "v1.33.0"},
    }
    groups: dict[str, list[dict[str, Any]]] = {}
    for group, version, plural, kind, namespaced in _DISCOVERY:
        gv = f"{group}/{version}" if group else version
        path = f"/apis/{gv}" if group else f"/api/{version}"
        resource = {"name": plural, "singularName": "", "namespaced": namespaced, "kind": kind}
        resource["verbs"] = verbs
        docs.setdefault(path, {"kind": "APIResourceList", "groupVersion": gv, "resources": []})
        docs[path]["resources"].append(resource)
        if group:
            groups.setdefault(group, [{"groupVersion": gv, "version": version}])
    docs["/apis"] = {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [{"name": g, "versions": v, "preferredVersion": v[0]} for g, v in groups.items()],
    }
    return docs


@pytest.fixture
def discovery_server() -> Iterator[str]:
    """Answers discovery; every object GET is 404, so kubectl plans a create."""
    docs = _discovery_docs()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            doc = docs.get(self.path.split("?", 1)[0])
            code = 200 if doc is not None else 404
            if doc is None:
                doc = {"kind": "Status", "apiVersion": "v1", "status": "Failure"}
                doc.update({"reason": "NotFound", "code": 404, "message": "not found"})
            body = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _kubectl() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH")
    return kubectl


def test_kubectl_kustomize_builds_every_object() -> None:
    kubectl = _kubectl()
    done = subprocess.run(
        [kubectl, "kustomize", str(KDIR)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    built = [d for d in yaml.safe_load_all(done.stdout) if d]
    key = sorted((d["kind"], d["metadata"]["name"]) for d in built)
    assert key == sorted((d["kind"], d["metadata"]["name"]) for d in _all_docs())


def test_kubectl_apply_dry_run_client(discovery_server: str, tmp_path: Path) -> None:
    kubectl = _kubectl()
    kinds = {d["kind"] for d in _all_docs()}
    assert kinds <= {k for *_, k, _ in _DISCOVERY}, "add the new kind to _DISCOVERY"
    cmd = [kubectl, f"--server={discovery_server}", f"--cache-dir={tmp_path / 'cache'}",
           "apply", "--dry-run=client", "--validate=false", "-k", str(KDIR)]  # fmt: skip
    # --validate=false: the stand-in serves no OpenAPI; the schema test above validates.
    env = {"KUBECONFIG": str(tmp_path / "none"), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    created = [line for line in done.stdout.splitlines() if line.endswith("created (dry run)")]
    assert len(created) == len(_all_docs()), done.stdout
