"""The ``banking`` command line (DESIGN.md section 5)."""

from __future__ import annotations

import asyncio
import atexit
import getpass
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import typer

from banking.config import InsecureConfiguration, Settings, load_settings

app = typer.Typer(
    help="Banking API: core-banking transaction service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
users_app = typer.Typer(help="Manage users.", no_args_is_help=True)
app.add_typer(users_app, name="users")


def _settings() -> Settings:
    try:
        return load_settings()
    except InsecureConfiguration as error:
        typer.echo(f"refusing to start: {error}", err=True)
        raise typer.Exit(2) from error
    except ValueError as error:  # pydantic validation of the environment
        typer.echo(f"configuration is not valid: {error}", err=True)
        raise typer.Exit(2) from error


def _migrate(settings: Settings) -> None:
    from banking.storage.migrate import upgrade

    upgrade(settings.effective_database_url)


def _require_current_schema(settings: Settings) -> None:
    """Refuse to start on a database whose schema is behind this version (every request
    would fail on a missing table): say where it is, what is needed, and what to run. A
    database that cannot be reached is left to /ready, as before."""
    from sqlalchemy.exc import DBAPIError

    from banking.storage.migrate import database_schema_revision

    try:
        revision = database_schema_revision(settings.effective_database_url)
    except (DBAPIError, OSError):
        return
    if revision.is_behind:
        typer.echo(f"refusing to start: {revision.describe()}", err=True)
        raise typer.Exit(1)


@app.command()
def migrate() -> None:
    """Apply the database migrations (SQLite or PostgreSQL) up to the newest."""
    settings = _settings()
    _migrate(settings)
    typer.echo("database is at the newest schema")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="REST port.")] = None,
    grpc_port: Annotated[int | None, typer.Option(help="gRPC port.")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="REST worker processes.")] = 1,
    run_migrations: Annotated[
        bool | None,
        typer.Option("--migrate/--no-migrate", help="Migrate first (default: embedded only)."),
    ] = None,
) -> None:
    """Serve the REST API and gRPC. One worker: both in this process, on one event loop. More
    workers: REST only (run gRPC in its own process with `banking grpc`)."""
    import uvicorn

    from banking.cache.services import memory_cache_goes_stale
    from banking.cache.sticky import replicas_need_shared_marks
    from banking.observability.logging import configure_logging, get_logger

    settings = _settings()
    configure_logging(level=settings.log_level, json_output=settings.log_json)
    if replicas_need_shared_marks(settings, processes=workers):
        typer.echo(
            "DATABASE_REPLICA_URLS with --workers > 1 needs REDIS_URL: each worker would keep "
            "its own record of who just wrote, and a client could read its own write stale "
            "from a replica (docs/replicas.md)",
            err=True,
        )
        raise typer.Exit(2)
    if run_migrations if run_migrations is not None else settings.is_embedded_database:
        _migrate(settings)
    _require_current_schema(settings)
    _bootstrap_admin(settings)
    if grpc_port is not None:
        os.environ["GRPC_PORT"] = str(grpc_port)
    if memory_cache_goes_stale(settings, processes=workers):
        # Read-your-write across the workers: they share no memory (docs/redis.md).
        os.environ["BALANCE_CACHE_ENABLED"] = "false"
        get_logger("banking").warning(
            "balance_cache_disabled",
            reason="several workers and no REDIS_URL: a per-process cache would serve stale "
            "balances; set REDIS_URL to share one",
            workers=workers,
        )
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="banking-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        # Ours, so ours to remove when the server stops (the workers' files live there).
        atexit.register(shutil.rmtree, metrics_dir, ignore_errors=True)
    if workers == 1:
        from banking.bootstrap import build_container, serve_rest_and_grpc

        _run_server(
            serve_rest_and_grpc(
                build_container(settings),
                host=host or settings.host,
                port=port or settings.port,
                grpc_port=settings.grpc_port if grpc_port is None else grpc_port,
            )
        )
        return
    uvicorn.run(
        "banking.bootstrap:app_factory",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_config=None,
        access_log=False,
        proxy_headers=False,
    )


@app.command("grpc")
def grpc_serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="gRPC port (default: GRPC_PORT).")] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus /metrics on this port (default: off).")
    ] = None,
    run_migrations: Annotated[
        bool | None,
        typer.Option("--migrate/--no-migrate", help="Migrate first (default: embedded only)."),
    ] = None,
) -> None:
    """Serve the gRPC API alone (its own process, next to REST workers or behind a balancer)."""
    from prometheus_client import start_http_server

    from banking.bootstrap import build_container
    from banking.grpc.server import serve_grpc
    from banking.observability.logging import configure_logging

    settings = _settings()
    configure_logging(level=settings.log_level, json_output=settings.log_json)
    if run_migrations if run_migrations is not None else settings.is_embedded_database:
        _migrate(settings)
    _require_current_schema(settings)
    _bootstrap_admin(settings)
    container = build_container(settings)
    if metrics_port is not None:
        start_http_server(
            metrics_port, addr=host or settings.host, registry=container.metrics.registry
        )
    _run_server(
        serve_grpc(
            container,
            host=host or settings.host,
            port=settings.grpc_port if port is None else port,
        )
    )


def _run_server(main: Coroutine[Any, Any, None]) -> None:
    try:
        asyncio.run(main)
    except OSError as error:  # a port that is taken, an address that does not exist
        typer.echo(f"cannot start: {error}", err=True)
        raise typer.Exit(1) from error


def _bootstrap_admin(settings: Settings) -> None:
    """A fresh embedded install gets one admin with a random password, printed once."""
    if not settings.is_embedded_database:
        return
    from banking.bootstrap import build_container

    async def run() -> str | None:
        container = build_container(settings)
        try:
            return await container.users.create_bootstrap_admin()
        finally:
            await container.close()

    password = asyncio.run(run())
    if password is not None:
        # Deliberately on the terminal, not in the logs: shown once, never stored in clear.
        typer.echo(
            "\n  First start: created user 'admin' with password\n\n"
            f"      {password}\n\n"
            "  It is shown only this once. Create your own users with `banking users create`.\n",
            err=True,
        )


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Option(help="Login name.")],
    email: Annotated[str, typer.Option(help="E-mail address.")],
    role: Annotated[str, typer.Option(help="customer, teller, auditor or admin.")] = "customer",
) -> None:
    """Create a user. The password is read from standard input (or prompted on a terminal)."""
    from banking.bootstrap import build_container
    from banking.domain.errors import BankingError
    from banking.domain.roles import Role

    settings = _settings()
    try:
        chosen_role = Role(role)
    except ValueError as error:
        typer.echo(f"role must be one of {[r.value for r in Role]}", err=True)
        raise typer.Exit(2) from error
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            typer.echo("passwords differ", err=True)
            raise typer.Exit(2)
    else:
        password = sys.stdin.readline().rstrip("\r\n")

    async def run() -> str:
        container = build_container(settings)
        try:
            user = await container.users.create(
                None, username=username, email=email, password=password, role=chosen_role
            )
            return str(user.user_id)
        finally:
            await container.close()

    if settings.is_embedded_database:
        _migrate(settings)
    try:
        user_id = asyncio.run(run())
    except BankingError as error:
        typer.echo(f"{error.code}: {error.message}", err=True)
        raise typer.Exit(1) from error
    typer.echo(json.dumps({"user_id": user_id, "username": username, "role": chosen_role.value}))


kafka_app = typer.Typer(help="Kafka administration.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead-letter queues.", no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")
app.add_typer(dlq_app, name="dlq")


@app.command()
def worker(
    name: Annotated[
        str,
        typer.Argument(
            help="relay, processor, dlq, balance-cache, fraud, notifications, audit, analytics "
            "or holds (the expiry of holds)."
        ),
    ],
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus /metrics on this port (default: off).")
    ] = None,
) -> None:
    """Run one event-side worker against Kafka until SIGTERM/SIGINT."""
    import signal

    from prometheus_client import start_http_server

    from banking.bootstrap import build_container
    from banking.observability.logging import configure_logging
    from banking.workers.runtime import WORKER_NAMES, run_kafka_worker

    settings = _settings()
    configure_logging(level=settings.log_level, json_output=settings.log_json)
    if name not in WORKER_NAMES:
        names = ", ".join(WORKER_NAMES)
        typer.echo(f"unknown worker {name!r}; choose from {names}", err=True)
        raise typer.Exit(2)
    if not settings.uses_kafka:
        typer.echo(
            "KAFKA_BOOTSTRAP_SERVERS is not set: in the embedded shape the workers run "
            "inside `banking serve`",
            err=True,
        )
        raise typer.Exit(2)
    if name == "analytics" and not settings.analytics_location:
        typer.echo(_NO_ANALYTICS_LOCATION, err=True)
        raise typer.Exit(2)
    _require_current_schema(settings)

    async def run() -> None:
        container = build_container(settings)
        if metrics_port is not None:
            start_http_server(metrics_port, addr=settings.host, registry=container.metrics.registry)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await run_kafka_worker(name, container, stop)
        finally:
            await container.close()

    asyncio.run(run())


@kafka_app.command("create-topics")
def kafka_create_topics() -> None:
    """Create the topics of DESIGN.md section 7 (see KAFKA_TOPIC_PARTITIONS and friends) and
    the compacted banking.schemas, and publish the event schemas on it."""
    from banking.workers.admin import create_topics

    settings = _settings()
    if not settings.uses_kafka:
        typer.echo("KAFKA_BOOTSTRAP_SERVERS is not set", err=True)
        raise typer.Exit(2)
    created = asyncio.run(create_topics(settings))
    typer.echo(json.dumps({"created": created}))


@dlq_app.command("replay")
def dlq_replay(
    limit: Annotated[int, typer.Option(min=1, help="Replay at most this many messages.")] = 100_000,
) -> None:
    """Re-submit the permanent dead letters to their original topic, once each."""
    from banking.workers.admin import replay_dead_letters

    settings = _settings()
    if not settings.uses_kafka:
        typer.echo("KAFKA_BOOTSTRAP_SERVERS is not set", err=True)
        raise typer.Exit(2)
    replayed = asyncio.run(replay_dead_letters(settings, limit=limit))
    typer.echo(json.dumps({"replayed": replayed}))


fraud_app = typer.Typer(
    help="Fraud detection: simulate labelled traffic, train the model, evaluate it.",
    no_args_is_help=True,
)
app.add_typer(fraud_app, name="fraud")


@fraud_app.command("simulate")
def fraud_simulate(
    out: Annotated[Path, typer.Option(help="Where to write the legs: .parquet or .csv.")],
    seed: Annotated[int, typer.Option(help="The simulation's seed (same seed, same data).")] = 1,
    customers: Annotated[int, typer.Option(min=2, help="Simulated customers.")] = 200,
    days: Annotated[int, typer.Option(min=1, help="Simulated days.")] = 30,
) -> None:
    """Write a seeded, labelled simulation (normal behaviour mixed with named fraud
    patterns): one row per leg, with its pattern (empty for normal traffic)."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    from banking.events.schemas import MONEY, TIME
    from banking.fraud.simulate import simulate

    if out.suffix not in (".parquet", ".csv"):
        typer.echo("--out must end in .parquet or .csv", err=True)
        raise typer.Exit(2)
    try:
        legs = simulate(seed, customers, days)
    except ValueError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from error
    table = pa.table(
        {
            "transaction_id": [str(leg.movement.transaction_id) for leg in legs],
            "account_id": [str(leg.movement.account_id) for leg in legs],
            "transaction_type": [leg.movement.kind.value for leg in legs],
            "amount": pa.array([leg.movement.amount for leg in legs], MONEY),
            "currency": [leg.movement.currency for leg in legs],
            "counterparty_account_id": [
                str(leg.movement.counterparty_account_id)
                if leg.movement.counterparty_account_id
                else None
                for leg in legs
            ],
            "created_at": pa.array([leg.movement.created_at for leg in legs], TIME),
            "status": [leg.movement.status.value for leg in legs],
            "pattern": [leg.pattern for leg in legs],
        }
    )
    if out.suffix == ".parquet":
        pq.write_table(table, out)
    else:
        pa_csv.write_csv(table, out)
    fraud = sum(1 for leg in legs if leg.pattern)
    typer.echo(json.dumps({"legs": len(legs), "fraud_legs": fraud, "out": str(out)}))


@fraud_app.command("train")
def fraud_train(
    simulated: Annotated[
        bool,
        typer.Option(
            "--simulated/--ledger",
            help="Train on a seeded simulation instead of the ledger's history (a fresh "
            "install has none).",
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the forest (and of the simulation).")] = 1,
    days: Annotated[int, typer.Option(min=1, help="How many days of history to learn.")] = 90,
    limit: Annotated[int, typer.Option(min=1, help="At most this many legs.")] = 1_000_000,
) -> None:
    """Train a new model version and write it to FRAUD_MODEL_DIR; running workers pick it up
    within FRAUD_MODEL_RELOAD_SECONDS. From the ledger: its finished legs of the last DAYS,
    with the reviewers' decisions on held commands as labels."""
    from datetime import timedelta

    from banking.domain.clock import utc_now
    from banking.fraud.assessment import Movement
    from banking.fraud.model import save
    from banking.fraud.training import train, train_on_simulation, training_rows
    from banking.storage.database import Database, create_engine
    from banking.storage.fraud_history import finished_legs, review_labels

    settings = _settings()
    if simulated:
        model = train_on_simulation(seed)
    else:
        _require_current_schema(settings)

        async def history() -> tuple[list[Movement], dict[UUID, bool]]:
            database = Database(create_engine(settings))
            try:
                legs = await finished_legs(
                    database, since=utc_now() - timedelta(days=days), limit=limit
                )
                return [Movement.of_leg(leg) for leg in legs], await review_labels(database)
            finally:
                await database.dispose()

        movements, labels = asyncio.run(history())
        try:
            model = train(training_rows(movements, labels), seed=seed)
        except ValueError as error:
            typer.echo(f"cannot train: {error} (try --simulated on a fresh install)", err=True)
            raise typer.Exit(1) from error
    path = save(model, settings.effective_fraud_model_dir)
    typer.echo(json.dumps({"version": model.version, "path": str(path), **model.training}))


@fraud_app.command("evaluate")
def fraud_evaluate(
    train_seed: Annotated[int, typer.Option(help="Seed of the training simulation.")] = 21,
    test_seed: Annotated[int, typer.Option(help="Seed of the held-out simulation.")] = 22,
    customers: Annotated[int, typer.Option(min=2, help="Simulated customers.")] = 200,
    days: Annotated[int, typer.Option(min=1, help="Simulated days.")] = 30,
    labelled: Annotated[
        bool,
        typer.Option(
            "--labelled/--unlabelled", help="Calibrate with the training set's fraud labels."
        ),
    ] = True,
) -> None:
    """Precision, recall, F1 and ROC-AUC on a held-out simulation, overall and per fraud
    pattern, for the rules alone, the model alone and both, and the sketch's baselines."""
    from banking.fraud.assessment import Thresholds
    from banking.fraud.evaluate import evaluate

    settings = _settings()
    thresholds = Thresholds(settings.fraud_alert_threshold, settings.fraud_hold_threshold)
    try:
        report = evaluate(
            train_seed,
            test_seed,
            customers=customers,
            days=days,
            labelled=labelled,
            thresholds=thresholds,
        )
    except ValueError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from error
    typer.echo(report.format())


schemas_app = typer.Typer(
    help="Event schemas (Arrow), as published on banking.schemas.", no_args_is_help=True
)
app.add_typer(schemas_app, name="schemas")
_FROM_KAFKA = typer.Option(
    "--kafka", help="Read the schemas published on the cluster's banking.schemas topic."
)


@schemas_app.command("list")
def schemas_list(kafka: Annotated[bool, _FROM_KAFKA] = False) -> None:
    """List the event schemas this release reads and writes (or, --kafka, those published)."""
    listed = []
    for schema_id, ipc in _schema_documents(kafka).items():
        described = _describe(schema_id, ipc)
        keys = ("schema_id", "event_types", "framing", "fingerprint", "error")
        listed.append({key: described[key] for key in keys if key in described})
    typer.echo(json.dumps(listed, indent=2))


@schemas_app.command("show")
def schemas_show(
    schema_id: Annotated[
        str, typer.Argument(help="A schema id (transaction.v2) or an event's ce_dataschema.")
    ],
    arrow: Annotated[
        bool,
        typer.Option(
            "--arrow", help="Write the schema as an Arrow IPC stream (binary) instead of JSON."
        ),
    ] = False,
    kafka: Annotated[bool, _FROM_KAFKA] = False,
) -> None:
    """Print one event schema: JSON (fields, types, fingerprint) or the Arrow IPC stream."""
    from banking.events.envelope import DATASCHEMA_PREFIX

    documents = _schema_documents(kafka)
    key = schema_id.removeprefix(DATASCHEMA_PREFIX)
    ipc = documents.get(key)
    if ipc is None:
        known = ", ".join(sorted(documents)) or "none"
        typer.echo(f"no schema {schema_id!r}; known: {known}", err=True)
        raise typer.Exit(2)
    described = _describe(key, ipc)
    if "error" in described:
        typer.echo(f"schema {key!r}: {described['error']}", err=True)
        raise typer.Exit(1)
    if arrow:
        sys.stdout.buffer.write(ipc)
        sys.stdout.buffer.flush()
        return
    typer.echo(json.dumps(described, indent=2))


def _describe(schema_id: str, ipc: bytes) -> dict[str, Any]:
    """A schema document as JSON, or what is wrong with it (a record on the topic that is not
    an Arrow IPC schema)."""
    import pyarrow as pa

    from banking.events.registry import describe

    try:
        return describe(ipc)
    except pa.ArrowException as error:
        return {"schema_id": schema_id, "error": f"not an Arrow IPC schema: {error}"}


def _schema_documents(kafka: bool) -> dict[str, bytes]:
    """Schema id -> Arrow IPC stream: this release's schemas, or the cluster's."""
    from banking.events import registry

    if not kafka:
        return {schema_id: entry.ipc_stream for schema_id, entry in registry.SCHEMAS.items()}
    from banking.workers.admin import read_published_schemas

    settings = _settings()
    if not settings.uses_kafka:
        typer.echo("KAFKA_BOOTSTRAP_SERVERS is not set", err=True)
        raise typer.Exit(2)
    return asyncio.run(read_published_schemas(settings))


@app.command()
def reconcile() -> None:
    """Check that the books balance; exit 1 and list every difference when they do not."""
    from banking.bootstrap import build_container
    from banking.ledger.reconcile import reconcile as run_reconcile

    settings = _settings()

    async def run() -> int:
        container = build_container(settings)
        try:
            report = await run_reconcile(container.unit_of_work)
        finally:
            await container.close()
        typer.echo(
            json.dumps(
                {
                    "clean": report.clean,
                    "currencies": report.currencies,
                    "problems": report.problems,
                },
                indent=2,
            )
        )
        return 0 if report.clean else 1

    raise typer.Exit(asyncio.run(run()))


analytics_app = typer.Typer(
    help="The analytics Parquet dataset (ANALYTICS_LOCATION): DuckDB queries, reconciliation.",
    no_args_is_help=True,
)
app.add_typer(analytics_app, name="analytics")
_NO_ANALYTICS_LOCATION = (
    "ANALYTICS_LOCATION is not set: give the directory or pyarrow.fs URL (s3://bucket/path) "
    "of the analytics Parquet dataset (docs/analytics.md)"
)


def _analytics_location() -> str:
    settings = _settings()
    if not settings.analytics_location:
        typer.echo(_NO_ANALYTICS_LOCATION, err=True)
        raise typer.Exit(2)
    return settings.analytics_location


@analytics_app.command("query")
def analytics_query(
    sql: Annotated[str, typer.Argument(help="One SQL statement (DuckDB) over the views.")],
    output_format: Annotated[
        str, typer.Option("--format", help="table (aligned, default), csv or json.")
    ] = "table",
) -> None:
    """Run SQL over the dataset: views transactions, balances, fraud_alerts and held, with
    the partition columns event_type and date (docs/analytics.md). Decimals print exactly."""
    from banking.analytics.query import FORMATS, QueryFailed, render, run

    if output_format not in FORMATS:
        typer.echo(f"unknown format {output_format!r}; choose from {', '.join(FORMATS)}", err=True)
        raise typer.Exit(2)
    location = _analytics_location()
    try:
        result = run(location, sql)
    except QueryFailed as error:
        typer.echo(f"query failed: {error}", err=True)
        raise typer.Exit(1) from error
    typer.echo(render(result, output_format))


@analytics_app.command("reconcile")
def analytics_reconcile() -> None:
    """Per currency and day, completed credits and transfers in minus debits and transfers
    out in the dataset against the ledger; exit 1 and name every difference."""
    from banking.analytics.reconcile import reconcile_dataset
    from banking.bootstrap import build_container

    location = _analytics_location()
    settings = _settings()

    async def run() -> int:
        container = build_container(settings)
        try:
            report = await reconcile_dataset(location, container.database)
        finally:
            await container.close()
        days = sorted(set(report.dataset) | set(report.ledger))
        typer.echo(
            json.dumps(
                {
                    "clean": report.clean,
                    "days": [
                        {
                            "currency": currency,
                            "date": day.isoformat(),
                            "dataset_net": _net_text(report.dataset.get((currency, day))),
                            "ledger_net": _net_text(report.ledger.get((currency, day))),
                        }
                        for currency, day in days
                    ],
                    "problems": report.problems,
                },
                indent=2,
            )
        )
        return 0 if report.clean else 1

    raise typer.Exit(asyncio.run(run()))


def _net_text(totals: tuple[Any, int] | None) -> str | None:
    return None if totals is None else format(totals[0], "f")


@app.command()
def bench(
    output: Annotated[Path | None, typer.Option(help="Where to write the figures (JSON).")] = None,
    events: Annotated[
        bool, typer.Option("--events", help="Event backbone figures (Kafka relay, lag, formats).")
    ] = False,
    fraud: Annotated[
        bool,
        typer.Option("--fraud", help="Fraud scoring's cost on the REST path; webhook latency."),
    ] = False,
    replicas: Annotated[
        bool,
        typer.Option("--replicas", help="Reads served by read replicas; primary CPU without/with."),
    ] = False,
    topology: Annotated[
        bool,
        typer.Option("--topology", help="Audit and analytics lag behind the commit; Parquet size."),
    ] = False,
    money_path: Annotated[
        bool,
        typer.Option(
            "--money-path",
            help="REST/gRPC single, group commit and batches, SQLite, next to pgbench.",
        ),
    ] = False,
    ledger_features: Annotated[
        bool,
        typer.Option(
            "--ledger-features",
            help="Transfers/s without/with the hash chain and open holds; statements.",
        ),
    ] = False,
) -> None:
    """Benchmark the REST API on PostgreSQL against pgbench on the same server, or (--events)
    the event backbone under that load, or (--fraud) the cost of the fraud worker and the
    latency of webhook deliveries, or (--replicas) the share of reads the read replicas serve and
    the primary's CPU without and with them, or (--topology) how far the audit trail and the
    analytics dataset are behind the commit and what an event costs in Parquet, or
    (--money-path) the money path's scenarios of issue 14 next to pgbench, or
    (--ledger-features) what the hash chain and open holds cost a transfer, and a 100,000-leg
    statement."""
    try:
        from benchmarks.cli import run as run_bench
    except ModuleNotFoundError as error:
        # The benchmarks are their own package with their own extra, not part of the service.
        if (error.name or "").partition(".")[0] not in _BENCH_MODULES:
            raise
        typer.echo(
            f"banking bench: {error.name} is not installed; the benchmarks need the repository's "
            "benchmarks package and its extra: pip install -e '.[bench]'",
            err=True,
        )
        raise typer.Exit(2) from error

    raise typer.Exit(
        run_bench(
            events=events,
            fraud=fraud,
            replicas=replicas,
            topology=topology,
            money_path=money_path,
            ledger_features=ledger_features,
            output=output,
        )
    )


# What `banking bench` imports beyond the service's own dependencies (the `bench` extra).
_BENCH_MODULES = frozenset({"benchmarks", "aiohttp", "mirakuru", "port_for", "psutil"})


audit_app = typer.Typer(
    help="The audit trail: every published event, recorded once (docs/audit.md).",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")


@audit_app.command("gaps")
def audit_gaps(
    grace_seconds: Annotated[
        float,
        typer.Option(
            min=0, help="Leave out events published this recently (the consumer may be behind)."
        ),
    ] = 60.0,
    limit: Annotated[int, typer.Option(min=1, help="Name at most this many gaps.")] = 10_000,
) -> None:
    """Name every published outbox event (on a topic the audit consumer reads) that has no
    audit record: one JSON line each with event id, topic, type and time. Exit 1 when there
    is any, 0 otherwise. The outbox is bounded by OUTBOX_RETENTION_HOURS: events older than
    that are gone from it and cannot be checked."""
    from banking.audit.gaps import find_gaps
    from banking.storage.database import Database, create_engine
    from banking.workers.runtime import CONSUMER_GROUPS

    settings = _settings()
    _require_current_schema(settings)
    # Only the outbox rows a consumer sees as events (the audit consumer's topics).
    audited_topics = CONSUMER_GROUPS["audit"][1]

    async def run() -> list[Any]:
        database = Database(create_engine(settings))
        try:
            return await find_gaps(
                database, topics=audited_topics, grace_seconds=grace_seconds, limit=limit
            )
        finally:
            await database.dispose()

    gaps = asyncio.run(run())
    for gap in gaps:
        typer.echo(
            json.dumps(
                {
                    "event_id": str(gap.event_id),
                    "topic": gap.topic,
                    "event_type": gap.event_type,
                    "created_at": gap.created_at.isoformat(),
                    "published_at": gap.published_at.isoformat() if gap.published_at else None,
                }
            )
        )
    typer.echo(
        f"{len(gaps)} event(s) missing from the audit trail"
        + (" (at the --limit)" if len(gaps) >= limit else ""),
        err=True,
    )
    raise typer.Exit(1 if gaps else 0)


@audit_app.command("seal")
def audit_seal() -> None:
    """Seal every journal (transaction_logs) row not yet in the hash chain, now, in batches of
    JOURNAL_SEAL_BATCH rows (the relay does this after each publish pass; docs/audit.md)."""
    from banking.audit.chain import JournalSealer
    from banking.storage.database import Database, create_engine

    settings = _settings()
    _require_current_schema(settings)

    async def run() -> int:
        database = Database(create_engine(settings))
        try:
            return await JournalSealer(database, batch_size=settings.journal_seal_batch).seal_all()
        finally:
            await database.dispose()

    typer.echo(f"{asyncio.run(run())} journal row(s) sealed", err=True)


@audit_app.command("verify")
def audit_verify(
    from_seq: Annotated[
        int,
        typer.Option(
            min=1,
            help="Start at this chain position, trusting the stored hash of the one before.",
        ),
    ] = 1,
    unsealed_grace_seconds: Annotated[
        float,
        typer.Option(min=0, help="Warn about journal rows left unsealed for longer than this."),
    ] = 60.0,
) -> None:
    """Recompute the journal's hash chain in position order and name the first row that does
    not match (one JSON line: kind content_changed, hash_changed, content_or_hash_changed,
    seq_gap or head_mismatch, with seq, log_id and transaction_id). Exit 1 when the chain is
    broken, 0 when it is intact; rows not yet sealed are counted in a warning."""
    from banking.audit.chain import Verification, verify_chain
    from banking.storage.database import Database, create_engine

    settings = _settings()
    _require_current_schema(settings)

    async def run() -> Verification:
        database = Database(create_engine(settings))
        try:
            return await verify_chain(
                database, from_seq=from_seq, unsealed_grace_seconds=unsealed_grace_seconds
            )
        finally:
            await database.dispose()

    try:
        outcome = asyncio.run(run())
    except ValueError as error:  # --from-seq past the head
        typer.echo(f"cannot verify: {error}", err=True)
        raise typer.Exit(2) from error
    if outcome.unsealed_overdue:
        oldest = outcome.unsealed_oldest.isoformat() if outcome.unsealed_oldest else "?"
        typer.echo(
            f"warning: {outcome.unsealed_overdue} journal row(s) unsealed for more than "
            f"{unsealed_grace_seconds:g} s (oldest created {oldest}): is the relay running? "
            "(`banking audit seal` seals them now)",
            err=True,
        )
    if outcome.broken is not None:
        typer.echo(json.dumps(outcome.broken.as_json()))
        typer.echo(
            f"journal chain BROKEN at position {outcome.broken.seq} ({outcome.broken.kind}); "
            f"intact from {outcome.from_seq} through {outcome.verified_seq}",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(
        f"journal chain intact: {outcome.rows_verified} row(s) verified from position "
        f"{outcome.from_seq} through {outcome.verified_seq}, head hash {outcome.head.last_hash}",
        err=True,
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
