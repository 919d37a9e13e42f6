"""The Helm chart (helm/isthmus): `helm lint`, `helm template` with several value sets,
every rendered manifest checked against the Kubernetes schemas (kubernetes-validate,
strict), the pod's settings loaded by the hub's own ``load_settings``, and bad values
refused by values.schema.json with its message.

helm is built by scripts/install-helm.sh into .tools/bin (missing: fails in CI). The
bitnami/redis dependency is never fetched: the chart is copied with a stand-in
``charts/redis`` that renders nothing (Helm refuses a chart whose declared dependency is
absent, even disabled), so what is checked is the chart's own side of every value set.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from federation.keys import KeySet, rotate_file
from federation.settings import RegistrySettings, Settings, load_settings
from tests.peers.common import missing

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "isthmus"
KUBE_VERSION = "1.30.0"
RELEASE = "hub"
NAMESPACE = "extranet"
FULLNAME = "hub-isthmus"

Manifest = dict[str, Any]

# --- value sets -----------------------------------------------------------------------------

ISSUER = "https://sso.extranet.example"
PARTNER_SECRET = "partner-oidc-secret-5f1c"
CLIENT_SECRET = "orders-client-secret-9a2e"
REDIS_URL = "rediss://:redis-pass-77@redis.data.svc:6380/0"

DEFAULTS: dict[str, Any] = {}

PRODUCTION: dict[str, Any] = {
    "image": {"repository": "registry.example/isthmus", "tag": "0.1.0"},
    "config": {
        "issuer": ISSUER,
        "trusted_proxies": ["10.0.0.0/8"],
        "session": {"cookie_domain": "extranet.example"},
        "observability": {"metrics_allow": ["10.0.0.0/8"], "drain_seconds": 5},
        "registry": {"poll_seconds": 0.5},
        "partners": [
            {
                "id": "acme",
                "name": "Acme",
                "kind": "supplier",
                "status": "active",
                "domains": ["acme.example"],
                "connections": [
                    {
                        "type": "oidc",
                        "id": "acme-oidc",
                        "issuer": "https://idp.acme.example",
                        "client_id": "isthmus",
                        "client_secret": PARTNER_SECRET,
                    }
                ],
            }
        ],
        "clients": [
            {
                "client_id": "orders",
                "client_secret": CLIENT_SECRET,
                "redirect_uris": ["https://orders.extranet.example/callback"],
            }
        ],
        "apps": [
            {
                "id": "portal",
                "hosts": ["portal.extranet.example"],
                "upstreams": ["http://portal.apps.svc:8080"],
            }
        ],
    },
    "keys": {"existingSecret": "isthmus-signing-keys"},
    "redis": {"url": REDIS_URL},
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "1m"},
        "hosts": [
            {"host": "sso.extranet.example", "paths": [{"path": "/", "pathType": "Prefix"}]},
            {"host": "portal.extranet.example", "paths": [{"path": "/", "pathType": "Prefix"}]},
        ],
        "tls": [
            {
                "secretName": "extranet-tls",
                "hosts": ["sso.extranet.example", "portal.extranet.example"],
            }
        ],
    },
    "autoscaling": {
        "enabled": True,
        "minReplicas": 3,
        "maxReplicas": 12,
        "targetMemoryUtilizationPercentage": 80,
    },
    "podDisruptionBudget": {"enabled": True, "minAvailable": 2},
    "networkPolicy": {
        "enabled": True,
        "ingressController": {
            "namespace": "ingress-nginx",
            "podLabels": {"app.kubernetes.io/name": "ingress-nginx"},
        },
        "redis": {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [6380]},
        "httpsEgress": {"except": ["169.254.169.254/32"]},
        "extraEgress": [{"ports": [{"port": 8080, "protocol": "TCP"}]}],
    },
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "resources": {"requests": {"cpu": "500m", "memory": "384Mi"}, "limits": {"memory": "768Mi"}},
}

SENTINEL: dict[str, Any] = {
    "replicaCount": 3,
    "config": {"issuer": ISSUER},
    "keys": {"algorithm": "ES256"},
    "redis": {
        "sentinel": {
            "hosts": ["sentinel-0.redis:26379", "sentinel-1.redis:26379", "sentinel-2.redis:26379"],
            "masterName": "isthmus",
            "username": "isthmus",
        },
        "password": "master-pass",
        "sentinelPassword": "sentinel-pass",
    },
}

# The dependency chart's Secret is made by bitnami/redis itself: supplied here as if it existed.
DEPENDENCY: dict[str, Any] = {
    "replicaCount": 2,
    "keys": {"existingSecret": "isthmus-signing-keys"},
    "redis": {"enabled": True},
}
DEPENDENCY_SECRETS = {"hub-redis": {"redis-password": "bitnami-made-this"}}

# Everything secret or seeded comes from objects the chart does not manage.
EXISTING: dict[str, Any] = {
    "replicaCount": 2,
    "config": {"issuer": ISSUER},
    "existingSecret": "isthmus-seed-secrets",
    "seedConfigMap": "isthmus-seed",
    "keys": {"existingSecret": "isthmus-signing-keys", "existingSecretKey": "jwks.json"},
    "redis": {
        "existingSecret": "isthmus-redis",
        "cluster": {"enabled": True},
        "prefix": "{isthmus}:",
    },
}
EXISTING_SECRETS = {
    "isthmus-redis": {"redis-url": "redis://:pw@redis-cluster-0.data:6379"},
    "isthmus-seed-secrets": {
        "clients.json": json.dumps(
            [
                {
                    "client_id": "orders",
                    "client_secret": CLIENT_SECRET,
                    "redirect_uris": ["https://orders.extranet.example/callback"],
                }
            ]
        )
    },
}
EXISTING_CONFIGMAPS = {
    "isthmus-seed": {
        "partners.json": json.dumps([{"id": "acme", "name": "Acme", "kind": "supplier"}]),
    }
}

VALUE_SETS = {
    "defaults": DEFAULTS,
    "production": PRODUCTION,
    "sentinel": SENTINEL,
    "dependency": DEPENDENCY,
    "existing": EXISTING,
}
EXTERNAL: dict[str, tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]] = {
    "dependency": (DEPENDENCY_SECRETS, {}),
    "existing": (EXISTING_SECRETS, EXISTING_CONFIGMAPS),
}

# --- helm -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def helm() -> Path:
    local = ROOT / ".tools" / "bin" / "helm"
    found = local if local.is_file() else shutil.which("helm")
    if found is None:
        missing("helm", "run scripts/install-helm.sh (builds it into .tools/bin)")
    return Path(str(found))


@pytest.fixture(scope="session")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("helm-home")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


@pytest.fixture(scope="session")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chart with a stand-in for the (disabled) bitnami/redis dependency."""
    copy_dir = tmp_path_factory.mktemp("chart") / "isthmus"
    shutil.copytree(CHART, copy_dir, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    stub = copy_dir / "charts" / "redis"
    stub.mkdir(parents=True)
    declared = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))["dependencies"]
    version = next(d["version"] for d in declared if d["name"] == "redis")
    (stub / "Chart.yaml").write_text(f"apiVersion: v2\nname: redis\nversion: {version}\n")
    return copy_dir


class Helm:
    def __init__(self, binary: Path, env: dict[str, str], chart: Path, tmp: Path) -> None:
        self.binary, self.env, self.chart, self.tmp = binary, env, chart, tmp
        self._cache: dict[str, list[Manifest]] = {}

    def run(
        self, *args: str, values: Mapping[str, Any] | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binary), *args]
        if values is not None:
            path = self.tmp / f"values-{len(list(self.tmp.iterdir()))}.yaml"
            path.write_text(yaml.safe_dump(dict(values)))
            argv += ["-f", str(path)]
        return subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=120, check=False
        )

    def template_args(self, kube_version: str) -> list[str]:
        return [
            "template",
            RELEASE,
            str(self.chart),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            kube_version,
        ]

    def render(self, values: Mapping[str, Any], kube_version: str = KUBE_VERSION) -> list[Manifest]:
        key = json.dumps([values, kube_version], sort_keys=True)
        if key not in self._cache:
            done = self.run(*self.template_args(kube_version), values=values)
            assert done.returncode == 0, done.stderr
            self._cache[key] = [d for d in yaml.safe_load_all(done.stdout) if d]
        return copy.deepcopy(self._cache[key])

    def refuse(self, values: Mapping[str, Any]) -> str:
        done = self.run(*self.template_args(KUBE_VERSION), values=values)
        assert done.returncode != 0, f"rendered although it should not:\n{done.stdout[:2000]}"
        return done.stderr


@pytest.fixture(scope="session")
def charts(
    helm: Path, helm_env: dict[str, str], chart: Path, tmp_path_factory: pytest.TempPathFactory
) -> Helm:
    return Helm(helm, helm_env, chart, tmp_path_factory.mktemp("values"))


# --- reading what was rendered ----------------------------------------------------------------


def one(docs: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} in {[d['kind'] for d in docs]}"
    return found[0]


def kinds(docs: list[Manifest]) -> set[str]:
    return {d["kind"] for d in docs}


def pod_spec(docs: list[Manifest]) -> dict[str, Any]:
    spec: dict[str, Any] = one(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def hub_container(docs: list[Manifest]) -> dict[str, Any]:
    (container,) = pod_spec(docs)["containers"]
    assert container["name"] == "hub"
    return dict(container)


def settings_text(docs: list[Manifest]) -> str:
    return str(one(docs, "ConfigMap", FULLNAME)["data"]["isthmus.yaml"])


_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def pod_environment(
    docs: list[Manifest],
    secrets: Mapping[str, Mapping[str, str]] = {},
    configmaps: Mapping[str, Mapping[str, str]] = {},
) -> dict[str, str]:
    """The hub container's environment as the kubelet would build it: values with $(VAR)
    expanded, secretKeyRef/configMapKeyRef read from the rendered objects (or the ones the
    test says exist already); a reference to a missing key must be optional."""
    all_secrets = {k: dict(v) for k, v in secrets.items()}
    for doc in docs:
        if doc["kind"] == "Secret":
            data = doc.get("data") or {}
            all_secrets[doc["metadata"]["name"]] = {
                k: base64.b64decode(v).decode() for k, v in data.items()
            }
    all_maps = {k: dict(v) for k, v in configmaps.items()}
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            all_maps[doc["metadata"]["name"]] = dict(doc.get("data") or {})
    env: dict[str, str] = {}
    for var in hub_container(docs)["env"]:
        if "value" in var:
            env[var["name"]] = _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), var["value"])
            continue
        source = var["valueFrom"]
        ref = source.get("secretKeyRef") or source["configMapKeyRef"]
        objects = all_secrets if "secretKeyRef" in source else all_maps
        value = objects.get(ref["name"], {}).get(ref["key"])
        if value is None:
            assert ref.get("optional"), f"{var['name']}: {ref['name']}/{ref['key']} does not exist"
            continue
        env[var["name"]] = value
    return env


def hub_settings(docs: list[Manifest], tmp_path: Path, name: str = "") -> Settings:
    secrets, configmaps = EXTERNAL.get(name, ({}, {}))
    path = tmp_path / "isthmus.yaml"
    path.write_text(settings_text(docs))
    return load_settings(path, env=pod_environment(docs, secrets, configmaps))


# --- the Prometheus operator's ServiceMonitor: not a Kubernetes kind, so a small schema -------

_STR = {"type": "string"}
_LABELS = {"type": "object", "additionalProperties": _STR}
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": _STR, "labels": _LABELS, "annotations": _LABELS},
        },
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": _LABELS},
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchNames": {"type": "array", "items": _STR}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": _STR,
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        },
                    },
                },
            },
        },
    },
}


def validate_manifest(doc: Manifest, kube_version: str) -> None:
    if doc["kind"] == "ServiceMonitor":
        jsonschema.Draft7Validator(SERVICE_MONITOR_SCHEMA).validate(doc)
        return
    kubernetes_validate.validate(doc, kube_version, strict=True)


# --- lint -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_lint_strict(charts: Helm, name: str) -> None:
    done = charts.run("lint", "--strict", str(charts.chart), values=VALUE_SETS[name])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


def test_lint_of_the_source_tree_only_misses_the_unfetched_dependency(charts: Helm) -> None:
    done = charts.run("lint", str(CHART))
    assert done.returncode == 0, done.stdout + done.stderr
    problems = [
        line for line in done.stdout.splitlines() if line.startswith(("[WARNING]", "[ERROR]"))
    ]
    fetched = list((CHART / "charts").glob("redis-*.tgz"))  # after `helm dependency update`
    missing_dependency = f"[WARNING] {CHART}: chart directory is missing these dependencies: redis"
    assert problems == ([] if fetched else [missing_dependency])


# --- every manifest against the Kubernetes schemas -----------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_manifests_are_valid_kubernetes(charts: Helm, name: str) -> None:
    docs = charts.render(VALUE_SETS[name])
    assert docs
    for doc in docs:
        validate_manifest(doc, KUBE_VERSION)


def test_a_manifest_with_a_wrong_field_is_refused_by_the_validation() -> None:
    """The validation used above is strict: it does catch a misspelt field."""
    bad: Manifest = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 80, "targetPrt": "http"}]},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_manifest(bad, KUBE_VERSION)
    monitor: Manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "endpoints": [{"port": "http", "intervall": "30s"}]},
    }
    with pytest.raises(jsonschema.ValidationError):
        validate_manifest(monitor, KUBE_VERSION)


@pytest.mark.parametrize(
    ("kube_version", "pre_stop"),
    [
        ("1.25.0", {"exec": {"command": ["sleep", "3"]}}),  # the oldest the chart accepts
        ("1.29.0", {"exec": {"command": ["sleep", "3"]}}),
        ("1.37.0", {"sleep": {"seconds": 3}}),  # the newest kubernetes-validate knows
    ],
)
def test_every_supported_kubernetes_version(
    charts: Helm, kube_version: str, pre_stop: dict[str, Any]
) -> None:
    docs = charts.render(PRODUCTION, kube_version=kube_version)
    assert hub_container(docs)["lifecycle"]["preStop"] == pre_stop
    for doc in docs:
        validate_manifest(doc, kube_version)
    done = charts.run(*charts.template_args("1.24.0"), values=PRODUCTION)
    assert "chart requires kubeVersion: >=1.25.0-0" in done.stderr


def test_what_each_value_set_renders(charts: Helm) -> None:
    base = {"ServiceAccount", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget"}
    assert kinds(charts.render(DEFAULTS)) == base | {"Secret"}  # the generated keys
    assert kinds(charts.render(PRODUCTION)) == base | {
        "Secret",  # Redis URL, partners, clients
        "Ingress",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "ServiceMonitor",
    }
    docs = charts.render(EXISTING)
    assert kinds(docs) == base  # every secret is somebody else's
    assert sorted(
        d["metadata"]["name"] for d in charts.render(SENTINEL) if d["kind"] == "Secret"
    ) == [
        FULLNAME,
        f"{FULLNAME}-keys",
    ]


# --- the pod ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_pod_security(charts: Helm, name: str) -> None:
    docs = charts.render(VALUE_SETS[name])
    pod = pod_spec(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    container = hub_container(docs)
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["runAsNonRoot"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    # The only writable place: an emptyDir on /tmp.
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    writable = [p for p, m in mounts.items() if not m.get("readOnly")]
    assert writable == ["/tmp"]
    # The keys: a whole Secret directory (no subPath, so rotations reach the pod), read-only.
    keys = mounts["/etc/isthmus/keys"]
    assert "subPath" not in keys
    assert "secret" in volumes[keys["name"]]
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["limits"]["memory"]
    if "ServiceAccount" in kinds(docs):
        assert one(docs, "ServiceAccount")["automountServiceAccountToken"] is False


def test_probes_and_graceful_shutdown(charts: Helm) -> None:
    docs = charts.render(PRODUCTION)
    container = hub_container(docs)
    assert container["command"] == [
        "isthmus",
        "serve",
        "--config",
        "/etc/isthmus/config/isthmus.yaml",
    ]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["lifecycle"]["preStop"] == {"sleep": {"seconds": 3}}
    pod = pod_spec(docs)
    drain = PRODUCTION["config"]["observability"]["drain_seconds"]
    graceful = Settings().observability.graceful_timeout_seconds
    assert pod["terminationGracePeriodSeconds"] >= 3 + drain + graceful
    service = one(docs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"] == one(docs, "Deployment")["spec"]["selector"]["matchLabels"]


def test_replicas_spread_and_roll_without_losing_capacity(charts: Helm) -> None:
    deployment = one(charts.render(SENTINEL), "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }
    labels = deployment["spec"]["selector"]["matchLabels"]
    assert all(c["labelSelector"]["matchLabels"] == labels for c in spread)


def test_autoscaling_owns_the_replica_count(charts: Helm) -> None:
    docs = charts.render(PRODUCTION)
    assert "replicas" not in one(docs, "Deployment")["spec"]
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": FULLNAME,
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    targets = {
        m["resource"]["name"]: m["resource"]["target"]["averageUtilization"]
        for m in hpa["spec"]["metrics"]
    }
    assert targets == {"cpu": 70, "memory": 80}
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 2, "selector": hpa_selector(docs)}
    assert one(charts.render(DEFAULTS), "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def hpa_selector(docs: list[Manifest]) -> dict[str, Any]:
    return {"matchLabels": one(docs, "Deployment")["spec"]["selector"]["matchLabels"]}


def test_ingress_with_tls(charts: Helm) -> None:
    ingress = one(charts.render(PRODUCTION), "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == PRODUCTION["ingress"]["tls"]
    rules = {r["host"]: r["http"]["paths"] for r in ingress["spec"]["rules"]}
    assert set(rules) == {"sso.extranet.example", "portal.extranet.example"}
    backend = rules["sso.extranet.example"][0]["backend"]["service"]
    assert backend == {"name": FULLNAME, "port": {"name": "http"}}


def test_network_policy(charts: Helm) -> None:
    policy = one(charts.render(PRODUCTION), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    sources = [rule["from"][0] for rule in policy["ingress"]]
    assert sources[0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ingress-nginx"
    }
    assert sources[0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "ingress-nginx"}
    # Prometheus is let in because the ServiceMonitor is on.
    assert sources[1]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    dns, redis, https, extra = policy["egress"]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert redis == {
        "ports": [{"port": 6380, "protocol": "TCP"}],
        "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
    }
    assert https["ports"] == [{"port": 443, "protocol": "TCP"}]
    assert https["to"] == [
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}},
        {"ipBlock": {"cidr": "::/0"}},
    ]
    assert extra == {"ports": [{"port": 8080, "protocol": "TCP"}]}
    # With the dependency chart, Redis is reached by its pods' labels.
    with_dependency = copy.deepcopy(DEPENDENCY) | {"networkPolicy": {"enabled": True}}
    egress = one(charts.render(with_dependency), "NetworkPolicy")["spec"]["egress"]
    assert egress[1]["to"] == [
        {
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "redis",
                    "app.kubernetes.io/instance": RELEASE,
                }
            }
        }
    ]


def test_service_monitor_follows_the_metrics_path(charts: Helm) -> None:
    endpoint = one(charts.render(PRODUCTION), "ServiceMonitor")["spec"]["endpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    moved = copy.deepcopy(PRODUCTION)
    moved["config"]["observability"]["metrics_path"] = "/internal/metrics"
    endpoint = one(charts.render(moved), "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["path"] == "/internal/metrics"


# --- the hub's settings: what the pod runs with is a valid Isthmus configuration ----------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_settings_pass_the_hubs_own_loading(charts: Helm, name: str, tmp_path: Path) -> None:
    docs = charts.render(VALUE_SETS[name])
    assert isinstance(yaml.safe_load(settings_text(docs)), dict)
    settings = hub_settings(docs, tmp_path, name)
    assert (settings.listen.host, settings.listen.port) == ("0.0.0.0", 8080)
    assert settings.keys.path is not None
    assert settings.keys.path.parent == Path("/etc/isthmus/keys")
    assert settings.keys.path.name == VALUE_SETS[name].get("keys", {}).get(
        "existingSecretKey", "keys.json"
    )
    volume = next(v for v in pod_spec(docs)["volumes"] if v["name"] == "keys")
    assert volume["secret"]["items"] == [
        {"key": settings.keys.path.name, "path": settings.keys.path.name}
    ]


def test_defaults_are_one_process_in_memory(charts: Helm, tmp_path: Path) -> None:
    docs = charts.render(DEFAULTS)
    settings = hub_settings(docs, tmp_path)
    assert (settings.store.backend, settings.registry.backend) == ("memory", "memory")
    assert settings.issuer == Settings().issuer  # http://127.0.0.1:8080: kubectl port-forward
    assert one(docs, "Deployment")["spec"]["replicas"] == 1


def test_production_settings(charts: Helm, tmp_path: Path) -> None:
    docs = charts.render(PRODUCTION)
    settings = hub_settings(docs, tmp_path)
    assert settings.issuer == ISSUER
    assert settings.trusted_proxies == ("10.0.0.0/8",)
    assert (settings.store.backend, settings.store.url, settings.store.prefix) == (
        "redis",
        REDIS_URL,
        "isthmus:",
    )
    assert settings.registry.backend == "redis" and not settings.registry.own_redis  # the store's
    (partner,) = settings.partners
    assert partner.connections[0].client_secret == PARTNER_SECRET  # type: ignore[union-attr]
    assert settings.clients[0].client_secret == CLIENT_SECRET
    assert [app.id for app in settings.apps] == ["portal"]
    assert settings.observability.metrics_allow == ("10.0.0.0/8",)


def test_secrets_stay_out_of_the_config_map(charts: Helm) -> None:
    docs = charts.render(PRODUCTION)
    text = settings_text(docs)
    for secret in (PARTNER_SECRET, CLIENT_SECRET, "redis-pass-77", "partners", "clients"):
        assert secret not in text
    stored = pod_environment(docs)
    assert json.loads(stored["ISTHMUS_CLIENTS"])[0]["client_secret"] == CLIENT_SECRET
    assert stored["ISTHMUS_STORE__URL"] == REDIS_URL
    # A change of those secrets rolls the pods (the keys do not: the hub re-reads them).
    other = copy.deepcopy(PRODUCTION)
    other["config"]["clients"][0]["client_secret"] = "rotated-client-secret"
    before = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    after = one(charts.render(other), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert before["checksum/secret"] != after["checksum/secret"]
    assert before["checksum/config"] == after["checksum/config"]


def test_sentinel_settings(charts: Helm, tmp_path: Path) -> None:
    docs = charts.render(SENTINEL)
    settings = hub_settings(docs, tmp_path)
    sentinel = settings.store.sentinel
    assert sentinel is not None
    assert sentinel.hosts == tuple(SENTINEL["redis"]["sentinel"]["hosts"])
    assert (sentinel.master_name, sentinel.username) == ("isthmus", "isthmus")
    assert (sentinel.password, sentinel.sentinel_password) == ("master-pass", "sentinel-pass")
    assert settings.store.url is None
    assert settings.registry.backend == "redis"  # on the store's Sentinel master
    assert "master-pass" not in settings_text(docs)


def test_dependency_chart_settings(charts: Helm, tmp_path: Path) -> None:
    docs = charts.render(DEPENDENCY)
    settings = hub_settings(docs, tmp_path, "dependency")
    assert settings.store.url == "redis://:bitnami-made-this@hub-redis-master:6379/0"
    with_sentinel = copy.deepcopy(DEPENDENCY)
    with_sentinel["redis"]["sentinel"] = {"enabled": True, "masterSet": "hubmaster"}
    docs = charts.render(with_sentinel)
    sentinel = hub_settings(docs, tmp_path, "dependency").store.sentinel
    assert sentinel is not None
    assert (sentinel.hosts, sentinel.master_name) == (("hub-redis:26379",), "hubmaster")
    assert sentinel.password == sentinel.sentinel_password == "bitnami-made-this"


def test_existing_objects_settings(charts: Helm, tmp_path: Path) -> None:
    docs = charts.render(EXISTING)
    settings = hub_settings(docs, tmp_path, "existing")
    assert settings.store.url == "redis://:pw@redis-cluster-0.data:6379"
    assert (settings.store.cluster, settings.store.prefix) == (True, "{isthmus}:")
    assert [p.id for p in settings.partners] == ["acme"]  # from the seed ConfigMap
    assert [c.client_id for c in settings.clients] == ["orders"]  # from the existing Secret
    assert settings.apps == ()  # apps.json is optional and absent


# --- signing keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "alg"), [(DEFAULTS, "RS256"), (SENTINEL, "ES256")])
def test_generated_keys_are_a_hub_key_set(
    charts: Helm, values: dict[str, Any], alg: str, tmp_path: Path
) -> None:
    docs = charts.render(values)
    secret = one(docs, "Secret", f"{FULLNAME}-keys")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    keys = KeySet.from_json(json.loads(base64.b64decode(secret["data"]["keys.json"])))
    assert keys.current.alg == keys.next.alg == alg
    assert keys.current.kid != keys.next.kid
    assert keys.previous is None
    assert len(keys.jwks()["keys"]) == 2
    # docs/helm.md#key-rotation: the CLI's rotation works on the chart's file.
    path = tmp_path / "keys.json"
    path.write_bytes(base64.b64decode(secret["data"]["keys.json"]))
    rotated = rotate_file(path)
    assert rotated.previous is not None
    assert (rotated.previous.kid, rotated.current.kid) == (keys.current.kid, keys.next.kid)


def test_an_existing_keys_secret_is_mounted_not_made(charts: Helm) -> None:
    docs = charts.render(EXISTING)
    assert not [d for d in docs if d["kind"] == "Secret"]
    volume = next(v for v in pod_spec(docs)["volumes"] if v["name"] == "keys")
    assert volume["secret"]["secretName"] == "isthmus-signing-keys"


# --- bad values fail at install, with the schema's message ---------------------------------


def with_values(base: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    values = copy.deepcopy(dict(base))
    values.update(changes)
    return values


REFUSED = [
    pytest.param(
        {"replicaCount": "3"},
        ["at '/replicaCount': got string, want integer"],
        id="string-replicas",
    ),
    pytest.param(
        {"replicas": 3},
        ["additional properties 'replicas' not allowed"],
        id="unknown-top-level-key",
    ),
    pytest.param(
        {"replicaCount": 3},
        ["at '/replicaCount': maximum: got 3, want 1", "at '/redis/url': minLength: got 0, want 1"],
        id="replicas-on-the-memory-store",
    ),
    pytest.param(
        {"autoscaling": {"enabled": True}},
        ["at '/autoscaling/enabled': value must be false", "at '/redis/sentinel/hosts': minItems"],
        id="autoscaling-on-the-memory-store",
    ),
    pytest.param(
        {"config": {"store": {"backend": "redis"}}},
        ["at '/config': additional properties 'store' not allowed"],
        id="chart-owned-setting",
    ),
    pytest.param(
        {"config": {"issuer": "sso.example.com"}},
        ["at '/config/issuer'"],
        id="issuer-not-a-url",
    ),
    pytest.param({"image": {"pullPolicy": "Sometimes"}}, ["at '/image/pullPolicy'"], id="bad-enum"),
    pytest.param(
        {"redis": {"sentinel": {"hosts": ["sentinel-0"]}}},
        ["at '/redis/sentinel/hosts/0'"],
        id="sentinel-without-port",
    ),
]


@pytest.mark.parametrize(("values", "messages"), REFUSED)
def test_bad_values_fail_with_the_schemas_message(
    charts: Helm, values: dict[str, Any], messages: list[str]
) -> None:
    stderr = charts.refuse(values)
    assert "values don't meet the specifications of the schema" in stderr
    for message in messages:
        assert message in stderr
    done = charts.run("lint", str(charts.chart), values=values)
    assert done.returncode != 0
    assert messages[0] in done.stdout + done.stderr


def test_many_replicas_on_redis_are_accepted(charts: Helm) -> None:
    for redis in ({"url": "redis://r:6379/0"}, {"existingSecret": "r"}, {"enabled": True}):
        charts.render({"replicaCount": 3, "redis": redis, "keys": {"algorithm": "ES256"}})


TEMPLATE_REFUSALS = [
    pytest.param(
        {"ingress": {"enabled": True}},
        "ingress.enabled needs config.issuer",
        id="ingress-without-issuer",
    ),
    pytest.param(
        {"redis": {"url": "redis://a:6379", "sentinel": {"hosts": ["s:26379"]}}},
        "choose one way to reach Redis, not redis.sentinel.hosts and redis.url",
        id="two-redis",
    ),
    pytest.param(
        {"terminationGracePeriodSeconds": 10},
        "terminationGracePeriodSeconds (10) must cover",
        id="grace-period-too-short",
    ),
    pytest.param(
        {"existingSecret": "s", "config": {"clients": [{"client_id": "x"}]}},
        "existingSecret holds partners.json/clients.json",
        id="clients-twice",
    ),
]


@pytest.mark.parametrize(("values", "message"), TEMPLATE_REFUSALS)
def test_inconsistent_values_fail_with_a_clear_message(
    charts: Helm, values: dict[str, Any], message: str
) -> None:
    assert message in charts.refuse(values)


# --- the schema and the docs keep up with the hub and the chart ---------------------------


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    return loaded


CHART_OWNED = {"listen", "store", "keys"}


def test_schema_is_draft_07_and_closed() -> None:
    loaded = schema()
    assert loaded["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert loaded["additionalProperties"] is False
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert set(values) <= set(loaded["properties"])
    jsonschema.Draft7Validator.check_schema(loaded)
    jsonschema.Draft7Validator(loaded).validate(values)


def test_schema_knows_every_hub_setting() -> None:
    """config accepts exactly the hub's top-level settings the chart does not own: a new
    hub setting needs its line in values.schema.json (and docs/helm.md)."""
    config = schema()["properties"]["config"]
    assert config["additionalProperties"] is False
    hub = set(Settings.model_fields) - CHART_OWNED
    assert set(config["properties"]) == hub, (
        f"values.schema.json config: add {sorted(hub - set(config['properties']))}, "
        f"drop {sorted(set(config['properties']) - hub)}"
    )
    registry = config["properties"]["registry"]["properties"]
    assert set(registry) <= set(RegistrySettings.model_fields)


def documented_production_values() -> dict[str, Any]:
    text = (ROOT / "docs" / "helm.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```yaml\n# production\.yaml\n(.*?)```", text, re.S)
    values: dict[str, Any] = yaml.safe_load(block)
    return values


def test_the_documented_production_example(charts: Helm, tmp_path: Path) -> None:
    docs = charts.render(documented_production_values())
    for doc in docs:
        validate_manifest(doc, KUBE_VERSION)
    secrets = {
        "isthmus-redis": {"redis-url": "rediss://:pw@redis.data.svc:6380/0"},
        "isthmus-seed": EXISTING_SECRETS["isthmus-seed-secrets"],
    }
    path = tmp_path / "isthmus.yaml"
    path.write_text(settings_text(docs))
    settings = load_settings(path, env=pod_environment(docs, secrets))
    assert settings.store.url == "rediss://:pw@redis.data.svc:6380/0"
    assert [c.client_id for c in settings.clients] == ["orders"]
    assert "HorizontalPodAutoscaler" in kinds(docs)


def test_docs_list_every_value() -> None:
    docs = (ROOT / "docs" / "helm.md").read_text(encoding="utf-8")
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    for key in leaf_keys(values):
        assert f"`{key}`" in docs, f"docs/helm.md does not describe {key}"


def leaf_keys(values: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        opaque = path in {
            "config",
            "resources",
            "podSecurityContext",
            "securityContext",
            "autoscaling.behavior",
        }
        if isinstance(value, dict) and value and not opaque and not path.endswith("Probe"):
            yield from leaf_keys(value, f"{path}.")
        else:
            yield path
