"""``banking bench``: the REST API under a mixed money-moving load, next to ``pgbench`` on the
same PostgreSQL server (DESIGN.md section 12; docs/benchmarks.md).

One run: fresh databases ``bench_api`` and ``bench_pgbench`` on the server named by
``BANKING_PG_ADMIN_DSN``; ``bench_api`` is migrated and seeded through the core services; the
real server (``banking serve``) runs as a subprocess; a separate load-generator process drives
it with aiohttp at each concurrency; ``pgbench`` runs at the same concurrency while the API is
idle; the ledger is reconciled at the end. Figures go to a JSON file and one line of
``history.jsonl`` next to it (``benchmarks.config`` lists the settings).

Exit codes: 0 ok, 1 the run failed (errors, books not clean, server or pgbench failure),
2 the run could not start (configuration, PostgreSQL unreachable), 130 interrupted.
"""

from __future__ import annotations

import asyncio
import resource
import secrets
from pathlib import Path
from uuid import uuid4

from banking.ledger.reconcile import ReconcileReport
from banking.storage.migrate import upgrade
from benchmarks.accounting import (
    cpu_figures,
    cpu_per_operation_ms,
    cpu_snapshot,
    machine_busy_cores,
)
from benchmarks.config import (
    API_DATABASE,
    EXIT_FAILED,
    EXIT_OK,
    PGBENCH_DATABASE,
    BenchConfig,
    exit_code_of,
    read_config,
    say,
)
from benchmarks.databases import PostgresFacts, drop_databases, recreate_databases
from benchmarks.load_generator import LoadPlan, run_load_process
from benchmarks.pgbench import PGBENCH_SCALE, PgbenchTarget
from benchmarks.processes import Server, ServerSettings, free_port, start_server, stop_server
from benchmarks.report import (
    RECONCILE_PROBLEMS_REPORTED_MAX,
    RoundFigures,
    build_report,
    now_iso,
    print_table,
    write_report,
)
from benchmarks.seeding import JWT_SECRET_LENGTH, SeededBank, check_books, seed_bank

IDLE_CHECK_SECONDS = 2.0
IDLE_CHECK_CORES_MAX = 0.25
BENCH_DATABASES = (API_DATABASE, PGBENCH_DATABASE)


def run_benchmark(output: Path) -> int:
    """Run the whole benchmark, write the JSON figures to ``output`` and return the exit code.

    0 when every request succeeded and the books reconcile; 1 when the run failed; 2 when it
    could not start (for example ``BANKING_PG_ADMIN_DSN`` is not set); 130 on Ctrl-C.
    """
    return exit_code_of(
        lambda: _run(read_config(output)), stopped="server stopped and bench databases dropped"
    )


def _run(config: BenchConfig) -> int:
    started_at = now_iso()
    busy_before_cores = machine_busy_cores(IDLE_CHECK_SECONDS)
    if busy_before_cores is not None and busy_before_cores > IDLE_CHECK_CORES_MAX:
        say(
            f"bench: warning: the machine is not idle ({busy_before_cores:.2f} cores busy "
            "before the run); figures will be lower and noisier than on a quiet machine"
        )
    jwt_secret = secrets.token_urlsafe(JWT_SECRET_LENGTH)[:JWT_SECRET_LENGTH]
    api_url = config.database_url(API_DATABASE)
    pgbench = PgbenchTarget.of(config.admin_url, config.pgbench_bin, PGBENCH_DATABASE)
    server: Server | None = None
    databases_created = False
    try:
        postgres = asyncio.run(recreate_databases(config.admin_url, BENCH_DATABASES))
        databases_created = True
        say(f"bench: PostgreSQL {postgres.version}; pgbench -i -s {PGBENCH_SCALE}")
        pgbench.initialize()
        say(f"bench: migrating and seeding {API_DATABASE}")
        upgrade(api_url)
        bank = asyncio.run(seed_bank(api_url, jwt_secret))
        settings = ServerSettings(
            api_url, jwt_secret, config.workers, config.pool_size, free_port()
        )
        server = start_server(settings, config.output.parent)
        say(f"bench: server ready at {server.base_url} ({config.workers} workers)")
        rounds = {
            c: _round(config, server, bank, pgbench, postgres, c) for c in config.concurrencies
        }
        stop_server(server)
        server = None
        books = asyncio.run(check_books(api_url))
        report = build_report(config, started_at, postgres.version, rounds, books)
        report["machine"]["busy_cores_before_run"] = busy_before_cores
        write_report(report, config.output)
        print_table(rounds)
        return _verdict(rounds, books, config.output)
    finally:
        if server is not None:
            stop_server(server)
        if databases_created:
            asyncio.run(drop_databases(config.admin_url, BENCH_DATABASES))


def _round(
    config: BenchConfig,
    server: Server,
    bank: SeededBank,
    pgbench: PgbenchTarget,
    postgres: PostgresFacts,
    concurrency: int,
) -> RoundFigures:
    say(
        f"bench: API at concurrency {concurrency}: {config.warmup_seconds:g} s warm-up, "
        f"{config.duration_seconds} s measured"
    )
    plan = LoadPlan(
        base_url=server.base_url,
        concurrency=concurrency,
        warmup_seconds=config.warmup_seconds,
        duration_seconds=config.duration_seconds,
        run_id=uuid4().hex[:12],
        teller_token=bank.teller_token,
        customers=bank.customers,
        hot_accounts=bank.hot_accounts,
        server_pid=server.pid,
        postgres_pid=postgres.postmaster_pid,
    )
    api = run_load_process(plan)
    say(
        f"bench:   {api.transfers_per_second:.1f} transfers/s, {api.requests_per_second:.1f} "
        f"requests/s, {api.errors} errors; pgbench -c {concurrency}"
    )
    before = cpu_snapshot(server.pid, postgres.postmaster_pid, resource.RUSAGE_CHILDREN)
    tps = pgbench.tps(concurrency, config.duration_seconds)
    after = cpu_snapshot(server.pid, postgres.postmaster_pid, resource.RUSAGE_CHILDREN)
    say(f"bench:   pgbench {tps:.1f} tps")
    cpu = cpu_figures(before, after)
    cpu.pop("server_process_cores", None)  # the API server is idle meanwhile
    cpu.update(cpu_per_operation_ms(cpu, tps, "transaction", ("postgres",)))
    return RoundFigures(api, tps, cpu)


def _verdict(rounds: dict[int, RoundFigures], books: ReconcileReport, output: Path) -> int:
    errors = sum(figures.api.errors for figures in rounds.values())
    declined = sum(figures.api.declined for figures in rounds.values())
    if declined:
        say(
            f"bench: warning: {declined} requests declined (INSUFFICIENT_FUNDS) although "
            "every account holds far more than the load moves"
        )
    if not books.clean:
        say("bench: FAILED: the books do not reconcile after the load:")
        for problem in books.problems[:RECONCILE_PROBLEMS_REPORTED_MAX]:
            say(f"    {problem}")
        return EXIT_FAILED
    if errors:
        say(f"bench: FAILED: {errors} requests failed (see error_details in {output})")
        return EXIT_FAILED
    say(f"bench: books reconcile; figures written to {output}")
    return EXIT_OK
