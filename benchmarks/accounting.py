"""CPU accounting over a measured window, from Linux's /proc (None where it is missing).

A snapshot holds cumulative CPU seconds of the whole machine, of the server's and
PostgreSQL's process trees and of the client; two snapshots give the average cores each used
in between, and with a rate, the CPU milliseconds per request or per pgbench transaction
(steadier from run to run than rates on a shared machine).
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CpuFigures = dict[str, float | list[float] | None]


@dataclass(frozen=True)
class CpuSnapshot:
    """Cumulative CPU seconds at one instant: whole machine, server and PostgreSQL process
    trees, and the client (this process, or its waited-for children such as pgbench)."""

    wall_seconds: float
    machine_busy_seconds: float | None
    server_seconds: float | None
    server_process_seconds: dict[int, float]
    postgres_seconds: float | None
    client_seconds: float


def cpu_snapshot(
    server_pid: int, postgres_pid: int | None, client: int = resource.RUSAGE_SELF
) -> CpuSnapshot:
    """Read /proc once; a tree is the process and all its descendants. ``client`` is
    ``RUSAGE_SELF`` (the load generator) or ``RUSAGE_CHILDREN`` (pgbench, once waited for)."""
    stats = dict(_process_stats())
    usage = resource.getrusage(client)
    return CpuSnapshot(
        wall_seconds=time.perf_counter(),
        machine_busy_seconds=_machine_busy_seconds(),
        server_seconds=_tree_cpu_seconds(stats, server_pid),
        server_process_seconds=_per_process_seconds(stats, server_pid),
        postgres_seconds=None if postgres_pid is None else _tree_cpu_seconds(stats, postgres_pid),
        client_seconds=usage.ru_utime + usage.ru_stime,
    )


def cpu_figures(before: CpuSnapshot, after: CpuSnapshot) -> CpuFigures:
    """Average cores used by each party between two snapshots; ``other`` is everything else
    on the machine (other users' processes, the kernel); ``server_process_cores`` splits the
    server's share by process (the uvicorn master first, by pid, then its workers)."""
    wall = max(after.wall_seconds - before.wall_seconds, 1e-9)

    def cores(first: float | None, last: float | None) -> float | None:
        return None if first is None or last is None else round((last - first) / wall, 2)

    figures: dict[str, float | None] = {
        "machine_cores": cores(before.machine_busy_seconds, after.machine_busy_seconds),
        "server_cores": cores(before.server_seconds, after.server_seconds),
        "postgres_cores": cores(before.postgres_seconds, after.postgres_seconds),
        "client_cores": cores(before.client_seconds, after.client_seconds),
    }
    parts = [figures["server_cores"], figures["postgres_cores"], figures["client_cores"]]
    machine = figures["machine_cores"]
    figures["other_cores"] = (
        None
        if machine is None or None in parts
        else round(max(0.0, machine - sum(p for p in parts if p is not None)), 2)
    )
    per_process: list[float] = [
        round((last - before.server_process_seconds[pid]) / wall, 2)
        for pid, last in after.server_process_seconds.items()
        if pid in before.server_process_seconds
    ]
    return {**figures, "server_process_cores": per_process}


def cpu_per_operation_ms(
    cpu: CpuFigures,
    operations_per_second: float,
    operation: str,
    parties: tuple[str, ...] = ("server", "postgres"),
) -> CpuFigures:
    """CPU milliseconds the server and PostgreSQL spend per request (or pgbench transaction):
    steadier from run to run than rates on a shared machine."""
    figures: CpuFigures = {}
    for party in parties:
        cores = cpu.get(f"{party}_cores")
        if isinstance(cores, float) and operations_per_second > 0:
            figures[f"{party}_cpu_ms_per_{operation}"] = round(
                1000 * cores / operations_per_second, 3
            )
    return figures


def machine_busy_cores(interval_seconds: float) -> float | None:
    """Average busy cores of the whole machine over the next ``interval_seconds``."""
    first = _machine_busy_seconds()
    time.sleep(interval_seconds)
    last = _machine_busy_seconds()
    if first is None or last is None:
        return None
    return round((last - first) / interval_seconds, 2)


def postmaster_pid_of(backend_pid: int) -> int | None:
    """The PostgreSQL postmaster (parent of a backend) when it runs on this machine."""
    stats = dict(_process_stats())
    found = stats.get(backend_pid)
    return found[0] if found else None


def _tree_cpu_seconds(stats: dict[int, tuple[int, int]], root_pid: int) -> float | None:
    if root_pid not in stats:
        return None
    return sum(_per_process_seconds(stats, root_pid).values())


def _per_process_seconds(stats: dict[int, tuple[int, int]], root_pid: int) -> dict[int, float]:
    """CPU seconds of each process of the tree under ``root_pid`` (itself included)."""
    pids, frontier = {root_pid}, [root_pid]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _) in stats.items() if ppid == parent]
        pids.update(children)
        frontier.extend(children)
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    return {pid: stats[pid][1] / ticks_per_second for pid in sorted(pids) if pid in stats}


def _process_stats() -> Iterator[tuple[int, tuple[int, int]]]:
    """(pid, (parent pid, CPU clock ticks)) of every readable process."""
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            fields = text[text.rindex(")") + 2 :].split()
            # utime + stime + the reaped children's cutime + cstime: a tree's sum stays
            # continuous when a child (a closed PostgreSQL backend) exits between snapshots.
            ticks = sum(int(value) for value in fields[11:15])
            yield int(entry.name), (int(fields[1]), ticks)


def _machine_busy_seconds() -> float | None:
    """Busy (not idle, not I/O wait) CPU seconds of the whole machine since boot."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")
