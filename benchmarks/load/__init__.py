"""Protocol-level load tools next to ``banking bench`` (README.md here): a ghz load file and
its runner for the gRPC door, a wrk script for the REST door, a seeder that prints account ids
and tokens for them (``python -m benchmarks.load.seed``), and the Redis figures
(``python -m benchmarks.load.redis_load``)."""
