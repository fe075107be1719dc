"""Balance cache, rate limiter and per-account locks, each in process memory (the embedded
default) or in Redis (``REDIS_URL``). Nothing here decides money: the database does."""
