"""Benchmarks and load tools of the banking service; not part of the service itself.

Installed next to ``banking`` with the ``bench`` extra (``pip install -e '.[bench]'``; the
``dev`` extra includes it). ``banking bench`` (``make bench``) and ``python -m benchmarks`` run
``benchmarks.cli``; docs/benchmarks.md describes the method and the figures.

Modules, by responsibility:

- ``cli``: the entry point (``--events``, ``--output``) and the default output paths;
- ``runner``: one REST benchmark run from start to verdict;
- ``config``: its settings from the environment, exceptions, exit codes, terminal output;
- ``databases``: the bench databases, dropped and created fresh;
- ``seeding``: the seeded bank (users, funded accounts, tokens) and the books' check;
- ``processes``: free ports, starting, waiting for and stopping processes (port-for,
  mirakuru); ``banking serve`` as the benchmark runs it;
- ``load_generator``: the aiohttp load generator, a process of its own;
- ``pgbench``: pgbench on the same server;
- ``stats``: samples, percentiles, the summary of a window;
- ``accounting``: CPU per party from /proc;
- ``report``: the JSON report, ``history.jsonl`` and the table;
- ``events``: ``banking bench --events`` (wire formats, the relay's rate and lag on Kafka);
- ``money_path``: ``banking bench --money-path`` (REST and gRPC single, group commit, batches,
  SQLite, peak RSS, next to pgbench: issue 14's scenarios);
- ``load/``: protocol-level load tools (ghz, wrk, a seeder) and the Redis figures.
"""
