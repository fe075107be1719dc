"""docker-compose.yml against the Compose specification, and against the service it runs.

The file is validated with the Compose specification's JSON schema as check-jsonschema
vendors it (offline). Then everything it tells the banking image is checked against the code:
each environment variable is a setting the service reads (and the values are accepted), each
command is a real ``banking`` command, each port and health-check path is one the process
serves, every worker has its service, and the compose Prometheus scrapes them all.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import shlex
import shutil
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from banking.bootstrap import build_container, create_rest_app
from banking.cli import app as cli_app
from banking.config import Settings
from banking.workers.runtime import WORKER_NAMES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
COMPOSE_PROMETHEUS = ROOT / "deploy" / "compose" / "prometheus.yml"
PROJECT_PROMETHEUS = ROOT / "infrastructure" / "prometheus" / "prometheus.yml"
DEV_CERT_SCRIPT = ROOT / "deploy" / "compose" / "make-dev-cert.py"
NGINX_CONFIG = ROOT / "infrastructure" / "nginx" / "banking.conf"
NGINX_COMPOSE_SITE = ROOT / "infrastructure" / "nginx" / "compose"
BANKING_IMAGE = "banking"
SETTINGS = {name.upper() for name in Settings.model_fields}
# Variables of .env that compose itself interpolates into docker-compose.yml (for the data
# stores and Grafana); they are not settings of the banking service.
COMPOSE_ONLY_VARIABLES = {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD"}
# The environment of each third-party container, exactly (their images' documented names).
THIRD_PARTY_ENVIRONMENT = {
    "postgres": {"POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD"},
    "postgres-replica-1": {"PGPASSWORD", "REPLICA_SLOT"},
    "postgres-replica-2": {"PGPASSWORD", "REPLICA_SLOT"},
    "redis": {"REDISCLI_AUTH"},
    "kafka": {
        "CLUSTER_ID",
        "KAFKA_NODE_ID",
        "KAFKA_PROCESS_ROLES",
        "KAFKA_LISTENERS",
        "KAFKA_ADVERTISED_LISTENERS",
        "KAFKA_CONTROLLER_LISTENER_NAMES",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
        "KAFKA_INTER_BROKER_LISTENER_NAME",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE",
        "KAFKA_LOG_DIRS",
    },
    "grafana": {"GF_SECURITY_ADMIN_PASSWORD", "GF_USERS_ALLOW_SIGN_UP"},
    "lb": set(),
    "prometheus": set(),
}
# Long-running banking services and what they must wait for before starting.
STARTUP_CONDITIONS = {
    "postgres": "service_healthy",
    "redis": "service_healthy",
    "kafka": "service_healthy",
    "migrate": "service_completed_successfully",
    "kafka-topics": "service_completed_successfully",
}
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?[?-][^}]*)?\}")


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            pytest.fail(f"{name} is not installed: pip install -e '.[dev]'", pytrace=False)
        return found
    return str(path)


def _compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


def _services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _banking_services() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in _services().items()
        if service.get("image") == BANKING_IMAGE and "entrypoint" not in service
    }


def _long_running_banking_services() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in _banking_services().items()
        if service.get("restart") != "no"
    }


def _env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, separator, value = line.partition("=")
            assert separator, f".env.example: {line!r} is not NAME=value"
            values[name.strip()] = value.strip()
    return values


def _interpolate(value: str, variables: dict[str, str]) -> str:
    return INTERPOLATION.sub(lambda match: variables[match.group(1)], value)


def _check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _metrics_port(command: list[str]) -> int | None:
    if "--metrics-port" not in command:
        return None
    return int(command[command.index("--metrics-port") + 1])


def _healthcheck_url(service: dict[str, Any]) -> tuple[str, int, str]:
    """The (host, port, path) a service's health check asks, from its Python one-liner."""
    test = " ".join(service["healthcheck"]["test"])
    url = re.search(r"http://([^:/]+):(\d+)(/[^'\"]*)", test)
    if url:
        return url.group(1), int(url.group(2)), url.group(3)
    channel = re.search(r"insecure_channel\('([^:]+):(\d+)'\)", test)
    assert channel, f"no URL or gRPC channel in the health check {test!r}"
    return channel.group(1), int(channel.group(2)), "grpc.health.v1.Health/Check"


def rest_paths_served(tmp_path: Path, paths: set[str]) -> set[str]:
    """Those of ``paths`` the REST app has a route for (any answer but 404), asked over ASGI.
    Built as in the production shape (Kafka configured: no in-process consumers start)."""

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


def test_the_compose_file_validates_against_the_compose_specification(tmp_path: Path) -> None:
    result = _check_jsonschema(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout
    # The same validator refuses a condition the specification does not have.
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        COMPOSE_FILE.read_text().replace("service_completed_successfully", "service_finished")
    )
    refused = _check_jsonschema(broken)
    assert refused.returncode == 1
    assert "service_finished" in refused.stdout


def test_every_variable_given_to_the_banking_image_is_a_setting_it_accepts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    example = _env_example()
    assert set(example) - COMPOSE_ONLY_VARIABLES <= SETTINGS, (
        f".env.example names variables no setting reads: "
        f"{sorted(set(example) - COMPOSE_ONLY_VARIABLES - SETTINGS)}"
    )
    # Compose really uses the compose-only ones (and .env.example lists each it needs).
    used = set(INTERPOLATION.findall(COMPOSE_FILE.read_text()))
    assert used == COMPOSE_ONLY_VARIABLES <= set(example)
    # Secrets as a user makes them from .env.example's instructions.
    variables = {name: "S" * 48 for name in COMPOSE_ONLY_VARIABLES}
    secrets = {
        "JWT_SECRET": "j" * 48,
        "COMMAND_SIGNING_KEYS": "bank:" + "c" * 48,
        "COMMAND_SIGNING_KID": "bank",
    }
    for name, service in _banking_services().items():
        assert service.get("env_file") == ".env", f"{name} does not read its secrets from .env"
        environment = {
            key: _interpolate(str(value), variables)
            for key, value in service["environment"].items()
        }
        unknown = set(environment) - SETTINGS
        assert not unknown, f"compose service {name} sets {sorted(unknown)}: not settings"
        settings = _settings_from(monkeypatch, {**example, **secrets, **environment})
        assert settings.is_production, name
        assert settings.effective_database_url.startswith("postgresql+asyncpg://banking:")
        assert settings.redis_url == "redis://:" + "S" * 48 + "@redis:6379/0"
        assert settings.kafka_bootstrap_servers == "kafka:9092"


def test_third_party_containers_get_exactly_their_documented_variables() -> None:
    services = _services()
    for name, expected in THIRD_PARTY_ENVIRONMENT.items():
        assert set(services[name].get("environment", {})) == expected, name
        assert "env_file" not in services[name], f"{name} must not receive the banking secrets"
    others = set(services) - set(_banking_services()) - set(THIRD_PARTY_ENVIRONMENT)
    assert others == {"tls-init"}


def test_every_banking_command_is_a_real_cli_command() -> None:
    runner = CliRunner()
    for name, service in _banking_services().items():
        command = service["command"]
        assert isinstance(command, list), f"{name}: the command is a list (exec form)"
        # --help parses the command line as the container runs it, without running it.
        result = runner.invoke(cli_app, [*command, "--help"])
        assert result.exit_code == 0, f"{name}: `banking {shlex.join(command)}`: {result.output}"
        if command[0] == "worker":
            assert command[1] in WORKER_NAMES, name


def test_one_shot_services_migrate_the_database_and_create_the_topics() -> None:
    services = _services()
    assert services["migrate"]["command"] == ["migrate"]
    assert services["kafka-topics"]["command"] == ["kafka", "create-topics"]
    for name in ("migrate", "kafka-topics", "tls-init"):
        assert services[name]["restart"] == "no"


def test_every_worker_has_its_service_and_two_api_instances_sit_behind_the_balancer() -> None:
    commands = {name: service["command"] for name, service in _banking_services().items()}
    for worker in WORKER_NAMES:
        assert commands.get(worker, [])[:2] == ["worker", worker], worker
    assert commands["api-1"] == commands["api-2"] == ["serve"]
    assert commands["grpc"][0] == "grpc"
    lb = _services()["lb"]
    waits_for = {name for name, rule in lb["depends_on"].items() if rule["condition"]}
    assert {"api-1", "api-2", "grpc"} <= waits_for


def test_services_start_in_order_and_only_wait_on_health_checks_that_exist() -> None:
    services = _services()
    for name, service in _long_running_banking_services().items():
        conditions = {dep: rule["condition"] for dep, rule in service["depends_on"].items()}
        assert conditions == STARTUP_CONDITIONS, name
        assert "healthcheck" in service, f"{name} has no health check"
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
            if rule["condition"] == "service_completed_successfully":
                assert services[dependency].get("restart") == "no", dependency


def test_health_checks_ask_the_ports_and_paths_the_processes_serve(tmp_path: Path) -> None:
    defaults = Settings(data_dir=tmp_path)
    asked = {_healthcheck_url(service)[2] for service in _long_running_banking_services().values()}
    routes = rest_paths_served(tmp_path, asked | {"/no-such-probe"})
    assert "/no-such-probe" not in routes
    for name, service in _long_running_banking_services().items():
        host, port, path = _healthcheck_url(service)
        assert host == "127.0.0.1", name
        command = service["command"]
        if command == ["serve"]:
            assert port == defaults.port == int(service["environment"]["PORT"])
            assert path == "/ready" and path in routes
            assert int(service["expose"][0]) == port
        elif command[0] == "grpc":
            assert port == defaults.grpc_port == int(service["environment"]["GRPC_PORT"])
        else:
            assert port == _metrics_port(command), name
            assert path == "/metrics" and path in routes
            assert service["expose"] == [str(port)], name


def test_compose_prometheus_scrapes_every_process_with_the_projects_job_names() -> None:
    services = _banking_services()
    scraped = yaml.safe_load(COMPOSE_PROMETHEUS.read_text())
    project = yaml.safe_load(PROJECT_PROMETHEUS.read_text())
    assert scraped["rule_files"] == project["rule_files"] == ["alerts.yml"]
    project_ports = {
        job["job_name"]: {
            int(t.rpartition(":")[2]) for c in job["static_configs"] for t in c["targets"]
        }
        for job in project["scrape_configs"]
    }
    targets = {
        job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]]
        for job in scraped["scrape_configs"]
    }
    assert set(targets) == set(project_ports)
    scraped_services = set()
    for job, job_targets in targets.items():
        for target in job_targets:
            host, _, port = target.rpartition(":")
            command = services[host]["command"]
            serves = 8000 if command == ["serve"] else _metrics_port(command)
            assert int(port) == serves, target
            assert {int(port)} == project_ports[job], f"{job}: not the project's port"
            scraped_services.add(host)
    assert scraped_services == set(_long_running_banking_services())


def test_mounted_files_exist_and_grafana_is_provisioned_with_the_projects_dashboards() -> None:
    services = _services()
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.partition(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
    prometheus_mounts = services["prometheus"]["volumes"]
    assert "./infrastructure/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in (
        prometheus_mounts
    )
    provider = yaml.safe_load(
        (ROOT / "infrastructure/grafana/provisioning/dashboards/banking.yml").read_text()
    )
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert (
        f"./infrastructure/grafana/dashboards:{dashboards_path}:ro"
        in (services["grafana"]["volumes"])
    )
    datasource = yaml.safe_load(
        (ROOT / "infrastructure/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert "127.0.0.1:9090:9090" in services["prometheus"]["ports"]


def test_named_volumes_hold_the_state() -> None:
    compose = _compose()
    declared = set(compose["volumes"])
    used = set()
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.partition(":")[0]
            if not source.startswith(("./", "/")):
                used.add(source)
    assert used == declared
    assert {"postgres-data", "redis-data", "kafka-data", "prometheus-data"} <= declared


def test_the_dev_certificate_is_made_once_and_loads_as_a_tls_key_pair(tmp_path: Path) -> None:
    directory = tmp_path / "tls"

    def run() -> str:
        result = subprocess.run(
            [sys.executable, str(DEV_CERT_SCRIPT), str(directory)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return result.stdout

    assert "made" in run()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "server.crt", directory / "server.key")
    assert (directory / "server.key").stat().st_mode & 0o077 == 0
    first = (directory / "server.crt").read_bytes()
    assert "kept" in run()
    assert (directory / "server.crt").read_bytes() == first
    # The names the load balancer's configuration reads.
    nginx = NGINX_CONFIG.read_text()
    assert "ssl_certificate tls/server.crt;" in nginx
    assert "ssl_certificate_key tls/server.key;" in nginx


def test_the_load_balancer_reaches_the_api_instances_and_grpc_and_is_their_only_proxy() -> None:
    services = _services()
    lb = services["lb"]
    # nginx reads site/ and tls/ next to its main configuration.
    config_dir = "/etc/nginx/banking"
    assert f"./infrastructure/nginx/banking.conf:{config_dir}/banking.conf:ro" in lb["volumes"]
    assert f"./infrastructure/nginx/compose:{config_dir}/site:ro" in lb["volumes"]
    assert f"tls:{config_dir}/tls:ro" in lb["volumes"]
    assert lb["command"][lb["command"].index("-c") + 1] == f"{config_dir}/banking.conf"
    upstreams = (NGINX_COMPOSE_SITE / "upstreams.conf").read_text()
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", upstreams, flags=re.MULTILINE)
    assert sorted(servers) == [("api-1", "8000"), ("api-2", "8000"), ("grpc", "50051")]
    for host, port in servers:
        assert port in services[host]["expose"], f"{host} does not expose {port}"
    listening = {
        int(port)
        for name in ("listen-http.conf", "listen-https.conf")
        for port in re.findall(r"^listen\s+(\d+)", (NGINX_COMPOSE_SITE / name).read_text(), re.M)
    }
    published = {int(mapping.rpartition(":")[2]) for mapping in lb["ports"]}
    assert published == listening == {8080, 8443}
    address = lb["networks"]["backend"]["ipv4_address"]
    subnet = _compose()["networks"]["backend"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(address) in ipaddress.ip_network(subnet)
    names = set()
    for name in ("api-1", "api-2"):
        environment = services[name]["environment"]
        assert json.loads(environment["TRUSTED_PROXIES"]) == [f"{address}/32"], name
        names.add(environment["INSTANCE_NAME"])
    assert names == {"api-1", "api-2"}


def test_prometheus_loads_the_compose_configuration_with_the_projects_rules(
    tmp_path: Path,
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed (scripts/install-system-deps.sh)", pytrace=False)
    # As mounted in the container: the configuration with alerts.yml next to it.
    shutil.copy(COMPOSE_PROMETHEUS, tmp_path / "prometheus.yml")
    shutil.copy(PROJECT_PROMETHEUS.parent / "alerts.yml", tmp_path / "alerts.yml")
    result = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
