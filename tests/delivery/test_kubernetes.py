"""deploy/kubernetes: every manifest and both built overlays against the Kubernetes schemas
(kubernetes-validate, offline, strict), and what they tell the banking image against the code.

The overlays are built with the real kustomize (scripts/install-go-tools.sh builds it; `make
test` passes its directory as BANKING_GO_TOOLS_BIN). Each built overlay is then checked as a
cluster would run it: environment variables are settings the service reads (and accepts),
commands are real CLI commands, probes ask ports and paths the processes serve, Services,
Ingresses, budgets and the autoscaler point at things that exist, the NetworkPolicies let
only the banking processes reach the data stores, and every pod runs as non-root.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from banking.bootstrap import build_container, create_rest_app
from banking.cli import app as cli_app
from banking.config import Settings
from banking.workers.runtime import WORKER_NAMES

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("self-contained", "managed")
KUBERNETES_VERSION = "1.31"
PROJECT_PROMETHEUS = ROOT / "infrastructure" / "prometheus" / "prometheus.yml"
SETTINGS = {name.upper() for name in Settings.model_fields}
BANKING_COMPONENTS = {"api", "grpc", "worker", "migrate"}
# The Secret banking-secrets (made by the operator, never committed) as the README makes it.
SECRET_VALUES = {
    "DATABASE_URL": "postgresql://banking:p@banking-postgres:5432/banking",
    "DATABASE_REPLICA_URLS": json.dumps(
        [
            f"postgresql://banking:p@banking-postgres-replica-{i}.banking-postgres-replicas:5432/banking"
            for i in (0, 1)
        ]
    ),
    "REDIS_URL": "redis://:p@banking-redis:6379/0",
    "JWT_SECRET": "j" * 48,
    "COMMAND_SIGNING_KEYS": "bank:" + "c" * 48,
    "COMMAND_SIGNING_KID": "bank",
}
# The environment of each third-party container, exactly (their images' documented names).
THIRD_PARTY_ENVIRONMENT = {
    "postgres": {"POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD", "PGDATA"},
    "postgres-replica": {"PGDATA"},
    "basebackup": {"PGDATA", "PGPASSWORD", "POD_NAME"},
    "redis": {"REDISCLI_AUTH"},
    "kafka": {
        "CLUSTER_ID",
        "KAFKA_PROCESS_ROLES",
        "KAFKA_LISTENERS",
        "KAFKA_CONTROLLER_LISTENER_NAMES",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
        "KAFKA_INTER_BROKER_LISTENER_NAME",
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
        "KAFKA_DEFAULT_REPLICATION_FACTOR",
        "KAFKA_MIN_INSYNC_REPLICAS",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE",
        "KAFKA_LOG_DIRS",
        "KAFKA_HEAP_OPTS",
    },
    "prometheus": set(),
    "grafana": {"GF_SECURITY_ADMIN_PASSWORD", "GF_USERS_ALLOW_SIGN_UP"},
}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job"}


def _kustomize() -> str:
    directory = os.environ.get("BANKING_GO_TOOLS_BIN")
    if not directory:
        result = subprocess.run(
            ["bash", str(ROOT / "scripts" / "install-go-tools.sh")],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"cannot build kustomize: {result.stderr}", pytrace=False)
        directory = result.stdout.strip()
    kustomize = Path(directory) / "kustomize"
    if not kustomize.is_file():
        pytest.fail(f"kustomize is not in {directory} (scripts/install-go-tools.sh)", pytrace=False)
    return str(kustomize)


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict[str, Any]]]:
    """Each overlay as `kustomize build` renders it (the self-contained one reads the
    project's Prometheus rules and Grafana dashboards from infrastructure/)."""
    kustomize = _kustomize()
    overlays = {}
    for overlay in OVERLAYS:
        result = subprocess.run(
            [
                kustomize,
                "build",
                "--load-restrictor",
                "LoadRestrictionsNone",
                str(KUBERNETES / "overlays" / overlay),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"kustomize build {overlay}: {result.stderr}"
        overlays[overlay] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return overlays


def _manifest_files() -> list[Path]:
    return sorted(path for path in KUBERNETES.rglob("*.yaml") if path.name != "kustomization.yaml")


def _validate(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def _named(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == kind}


def _workloads(documents: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (doc for doc in documents if doc["kind"] in WORKLOAD_KINDS)


def _pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def _containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = _pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def _is_banking(container: dict[str, Any]) -> bool:
    image: str = container["image"]
    return image.rpartition("/")[2].partition(":")[0] == "banking"


def _banking_containers(
    documents: list[dict[str, Any]],
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for workload in _workloads(documents):
        for container in _containers(workload):
            if _is_banking(container):
                yield workload, container


def _config_map(documents: list[dict[str, Any]], prefix: str) -> dict[str, str]:
    matching = [
        doc
        for doc in documents
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith(prefix + "-")
    ]
    assert len(matching) == 1, f"one ConfigMap {prefix}-<hash>, found {len(matching)}"
    data: dict[str, str] = matching[0]["data"]
    return data


def _metrics_port(args: list[str]) -> int | None:
    if "--metrics-port" not in args:
        return None
    return int(args[args.index("--metrics-port") + 1])


def _container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port (a number or a port name) as the container declares it."""
    for declared in container.get("ports", []):
        if port in (declared["containerPort"], declared.get("name")):
            number: int = declared["containerPort"]
            return number
    raise AssertionError(f"{container['name']} declares no port {port!r}")


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and In/NotIn/Exists expressions)."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
    return True


def _rest_paths_served(tmp_path: Path, paths: set[str]) -> set[str]:
    """Those of ``paths`` the REST app has a route for (any answer but 404), asked over ASGI."""

    async def ask() -> set[str]:
        settings = Settings(data_dir=tmp_path, kafka_bootstrap_servers="kafka:9092")
        container = build_container(settings)
        try:
            app = create_rest_app(container, dispose_on_shutdown=False)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                return {path for path in paths if (await client.get(path)).status_code != 404}
        finally:
            await container.close()

    return asyncio.run(ask())


def _settings_from(monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]) -> Settings:
    """Settings as a process with exactly ``environment`` reads them."""
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_every_manifest_file_validates_against_the_kubernetes_schemas() -> None:
    files = _manifest_files()
    assert len(files) >= 10
    kinds = set()
    for path in files:
        for document in yaml.safe_load_all(path.read_text()):
            try:
                _validate(document)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{path.relative_to(ROOT)}: {document['kind']}: {error}")
            kinds.add(document["kind"])
    assert {
        "Deployment",
        "StatefulSet",
        "Job",
        "Service",
        "Ingress",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    } <= kinds


def test_the_schemas_refuse_a_misspelt_field() -> None:
    deployment = yaml.safe_load_all((KUBERNETES / "base" / "api.yaml").read_text())
    document = copy.deepcopy(next(iter(deployment)))
    container = document["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        _validate(document)


def test_both_overlays_build_and_their_output_validates(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    for overlay, documents in built.items():
        for document in documents:
            try:
                _validate(document)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(
                    f"{overlay}: {document['kind']} {document['metadata']['name']}: {error}"
                )
        assert not [doc for doc in documents if doc["kind"] == "Secret"], (
            f"{overlay} commits a Secret: secrets are made outside git"
        )
        assert {doc["metadata"].get("namespace") for doc in documents} - {None} == {"banking"}


def test_the_self_contained_overlay_runs_three_kraft_brokers_postgres_and_redis(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    stateful = _named(built["self-contained"], "StatefulSet")
    assert set(stateful) == {
        "banking-kafka",
        "banking-postgres",
        "banking-postgres-replica",
        "banking-redis",
        "prometheus",
    }
    kafka = stateful["banking-kafka"]
    assert kafka["spec"]["replicas"] == 3
    environment = {e["name"]: e.get("value") for e in _containers(kafka)[0]["env"]}
    assert environment["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    voters = environment["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert [voter.partition("@")[0] for voter in voters] == ["0", "1", "2"]
    headless = _named(built["self-contained"], "Service")[kafka["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    assert _config_map(built["self-contained"], "banking-config")["KAFKA_REPLICATION_FACTOR"] == "3"
    assert not _named(built["managed"], "StatefulSet"), "managed runs nothing stateful"


def test_every_variable_given_to_the_banking_image_is_a_setting_it_accepts(
    built: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    documented = re.findall(r"--from-literal=([A-Z0-9_]+)=", (KUBERNETES / "README.md").read_text())
    secret_keys = set(documented)
    assert secret_keys == set(SECRET_VALUES), "README's banking-secrets and the test differ"
    assert secret_keys <= SETTINGS
    for overlay, documents in built.items():
        config = _config_map(documents, "banking-config")
        assert set(config) <= SETTINGS, f"{overlay}: {sorted(set(config) - SETTINGS)}"
        for workload, container in _banking_containers(documents):
            where = f"{overlay} {workload['metadata']['name']}/{container['name']}"
            sources = {
                ("configMap" if "configMapRef" in s else "secret"): next(iter(s.values()))["name"]
                for s in container["envFrom"]
            }
            assert sources["configMap"].startswith("banking-config-"), where
            assert sources["secret"] == "banking-secrets", where
            environment = {}
            for variable in container.get("env", []):
                assert variable["name"] in SETTINGS, f"{where}: {variable['name']} is no setting"
                if "value" in variable:
                    environment[variable["name"]] = variable["value"]
                else:  # from the pod itself (its name)
                    environment[variable["name"]] = workload["metadata"]["name"] + "-0"
            settings = _settings_from(monkeypatch, {**config, **SECRET_VALUES, **environment})
            assert settings.is_production, where
            assert settings.host == "0.0.0.0"
            assert settings.kafka_bootstrap_servers == config["KAFKA_BOOTSTRAP_SERVERS"]
            if "TRUSTED_PROXIES" in environment:
                assert all(
                    ipaddress.ip_network(n) for n in json.loads(environment["TRUSTED_PROXIES"])
                )


def test_third_party_containers_get_exactly_their_documented_variables(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    seen = set()
    for workload in _workloads(built["self-contained"]):
        for container in _containers(workload):
            if _is_banking(container):
                continue
            names = {variable["name"] for variable in container.get("env", [])}
            assert names == THIRD_PARTY_ENVIRONMENT[container["name"]], container["name"]
            assert "envFrom" not in container, f"{container['name']} gets the banking secrets"
            seen.add(container["name"])
    assert seen == set(THIRD_PARTY_ENVIRONMENT)


def test_every_banking_command_is_a_real_cli_command_and_every_worker_is_deployed(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    runner = CliRunner()
    for overlay, documents in built.items():
        workers = {}
        for workload, container in _banking_containers(documents):
            args = container["args"]
            assert "command" not in container, "the image's entrypoint is `banking`"
            result = runner.invoke(cli_app, [*args, "--help"])
            assert result.exit_code == 0, f"banking {' '.join(args)}: {result.output}"
            if args[0] == "worker":
                assert args[1] in WORKER_NAMES
                assert workload["metadata"]["name"] == f"banking-{args[1]}"
                workers[args[1]] = workload
        assert set(workers) == set(WORKER_NAMES), overlay
        job = _named(documents, "Job")["banking-migrate"]
        assert [c["args"] for c in _containers(job)] == [["migrate"], ["kafka", "create-topics"]]
        deployments = _named(documents, "Deployment")
        assert _containers(deployments["banking-api"])[0]["args"] == ["serve"]
        assert _containers(deployments["banking-grpc"])[0]["args"][0] == "grpc"


def test_probes_ask_the_ports_and_paths_the_processes_serve(
    built: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    defaults = Settings(data_dir=tmp_path)
    asked: set[str] = set()
    for documents in built.values():
        for workload, container in _banking_containers(documents):
            args = container["args"]
            if workload["kind"] == "Job":
                continue
            probes = [
                container[p]
                for p in ("startupProbe", "readinessProbe", "livenessProbe")
                if p in container
            ]
            assert {"readinessProbe", "livenessProbe"} <= set(container), workload["metadata"][
                "name"
            ]
            for probe in probes:
                if args == ["serve"]:
                    port = _container_port(container, probe["httpGet"]["port"])
                    assert port == defaults.port
                    asked.add(probe["httpGet"]["path"])
                elif args[0] == "grpc":
                    # The standard gRPC health service on the gRPC port.
                    assert probe["grpc"]["port"] == defaults.grpc_port
                    assert _container_port(container, probe["grpc"]["port"]) == defaults.grpc_port
                else:
                    port = _container_port(container, probe["httpGet"]["port"])
                    assert port == _metrics_port(args)
                    assert probe["httpGet"]["path"] == "/metrics"
            api_probes = {
                p: container[p]["httpGet"]["path"]
                for p in ("readinessProbe", "livenessProbe")
                if args == ["serve"]
            }
            if api_probes:
                assert api_probes == {"readinessProbe": "/ready", "livenessProbe": "/health"}
    served = _rest_paths_served(tmp_path, asked | {"/metrics", "/no-such-probe"})
    assert asked | {"/metrics"} <= served
    assert "/no-such-probe" not in served


def test_scrape_annotations_name_the_metrics_ports_and_the_projects_job_names(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    project = yaml.safe_load(PROJECT_PROMETHEUS.read_text())
    project_ports = {
        job["job_name"]: int(job["static_configs"][0]["targets"][0].rpartition(":")[2])
        for job in project["scrape_configs"]
    }
    for documents in built.values():
        jobs = {}
        for workload, container in _banking_containers(documents):
            if workload["kind"] == "Job":
                continue
            template = workload["spec"]["template"]
            annotations = template["metadata"]["annotations"]
            assert annotations["prometheus.io/scrape"] == "true"
            assert annotations["prometheus.io/path"] == "/metrics"
            port = int(annotations["prometheus.io/port"])
            assert _container_port(container, port) == port
            metrics = _metrics_port(container["args"]) or Settings.model_fields["port"].default
            assert port == metrics
            jobs[template["metadata"]["labels"]["app.kubernetes.io/name"]] = port
        # The job label Prometheus gives each pod is the project's job, on the project's port.
        assert jobs == project_ports


def test_services_ingresses_budgets_and_the_autoscaler_point_at_what_exists(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    for overlay, documents in built.items():
        workloads = list(_workloads(documents))
        services = _named(documents, "Service")
        for name, service in services.items():
            selected = [
                w
                for w in workloads
                if _matches(
                    {"matchLabels": service["spec"]["selector"]},
                    w["spec"]["template"]["metadata"]["labels"],
                )
            ]
            assert selected, f"{overlay}: Service {name} selects no pods"
            for port in service["spec"]["ports"]:
                for workload in selected:
                    _container_port(_pod_spec(workload)["containers"][0], port["targetPort"])
        for name, ingress in _named(documents, "Ingress").items():
            assert ingress["spec"]["tls"][0]["secretName"] == "banking-tls"
            for rule in ingress["spec"]["rules"]:
                assert rule["host"] in ingress["spec"]["tls"][0]["hosts"]
                for path in rule["http"]["paths"]:
                    backend = path["backend"]["service"]
                    ports = {p["name"] for p in services[backend["name"]]["spec"]["ports"]}
                    assert backend["port"]["name"] in ports, f"{name} -> {backend}"
        backends = {
            ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"]
            for ingress in _named(documents, "Ingress").values()
        }
        assert backends == {"banking-api", "banking-grpc"}
        budgets = _named(documents, "PodDisruptionBudget")
        for name, budget in budgets.items():
            assert any(
                _matches(budget["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
                for w in workloads
            ), f"{overlay}: PodDisruptionBudget {name} covers nothing"
        deployments = _named(documents, "Deployment")
        for name in ("banking-api", "banking-grpc", *(f"banking-{w}" for w in WORKER_NAMES)):
            assert name in budgets, f"{overlay}: {name} has no PodDisruptionBudget"
        autoscaler = _named(documents, "HorizontalPodAutoscaler")["banking-api"]
        assert autoscaler["spec"]["scaleTargetRef"]["name"] in deployments
        assert autoscaler["spec"]["minReplicas"] >= 2


def test_every_pod_runs_as_non_root_with_limits_and_banking_on_a_read_only_root(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    for overlay, documents in built.items():
        for workload in _workloads(documents):
            spec = _pod_spec(workload)
            where = f"{overlay} {workload['metadata']['name']}"
            assert spec["securityContext"]["runAsNonRoot"] is True, where
            assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
            for container in _containers(workload):
                security = container["securityContext"]
                assert security["allowPrivilegeEscalation"] is False, where
                assert security["capabilities"]["drop"] == ["ALL"], where
                assert {"requests", "limits"} <= set(container["resources"]), where
                if _is_banking(container):
                    assert security["readOnlyRootFilesystem"] is True, where
                    assert spec["automountServiceAccountToken"] is False, where


def _allowed_to_reach(
    documents: list[dict[str, Any]], target_labels: dict[str, str], port: int
) -> set[str]:
    """Names of the workloads of this namespace whose pods the NetworkPolicies let open a
    connection to a pod with ``target_labels`` on ``port``."""
    policies = [
        doc
        for doc in documents
        if doc["kind"] == "NetworkPolicy"
        and _matches(doc["spec"]["podSelector"], target_labels)
        and "Ingress" in doc["spec"]["policyTypes"]
    ]
    assert policies, f"no NetworkPolicy guards {target_labels}"
    allowed = set()
    for workload in _workloads(documents):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        for policy in policies:
            for rule in policy["spec"].get("ingress", []):
                ports = {
                    number
                    for p in rule.get("ports", [])
                    for number in range(p["port"], p.get("endPort", p["port"]) + 1)
                }
                peers = rule.get("from", [])
                same_namespace = [p for p in peers if "namespaceSelector" not in p]
                if port in ports and any(
                    _matches(p["podSelector"], labels) for p in same_namespace
                ):
                    allowed.add(workload["metadata"]["name"])
    return allowed


def test_only_the_banking_processes_reach_the_data_stores(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    documents = built["self-contained"]
    stateful = _named(documents, "StatefulSet")
    banking = {
        w["metadata"]["name"]
        for w in _workloads(documents)
        if w["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        in BANKING_COMPONENTS
    }
    assert len(banking) == 2 + len(WORKER_NAMES) + 1

    def labels(name: str) -> dict[str, str]:
        return dict(stateful[name]["spec"]["template"]["metadata"]["labels"])

    assert _allowed_to_reach(documents, labels("banking-postgres"), 5432) == banking | {
        "banking-postgres-replica"
    }
    assert _allowed_to_reach(documents, labels("banking-postgres-replica"), 5432) == banking - {
        "banking-migrate"
    }
    assert _allowed_to_reach(documents, labels("banking-redis"), 6379) == banking - {
        "banking-migrate"
    }
    assert _allowed_to_reach(documents, labels("banking-kafka"), 9092) == banking | {
        "banking-kafka"
    }
    # Everything in the namespace is closed unless a policy opens it.
    for overlay, all_documents in built.items():
        deny = _named(all_documents, "NetworkPolicy")["banking-default-deny-ingress"]
        assert deny["spec"]["podSelector"] == {} and "ingress" not in deny["spec"], overlay
    # Managed: only the banking processes may open connections to the data stores' network.
    managed = _named(built["managed"], "NetworkPolicy")
    to_stores = managed["banking-egress-datastores"]
    everyone = managed["banking-egress-except-datastores"]
    stores = to_stores["spec"]["egress"][0]["to"][0]["ipBlock"]["cidr"]
    assert everyone["spec"]["podSelector"] == {}
    assert [stores] == everyone["spec"]["egress"][1]["to"][0]["ipBlock"]["except"]
    selector = to_stores["spec"]["podSelector"]["matchExpressions"][0]
    assert set(selector["values"]) == BANKING_COMPONENTS
