"""Exit 0 when PostgreSQL and Redis answer: `python -m tests.services_up <pg-url> <redis-url>`."""

import sys


def main(pg_url: str, redis_url: str) -> int:
    import psycopg
    import redis

    try:
        psycopg.connect(pg_url, connect_timeout=3).close()
        redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
    except Exception as exc:
        print(f"services: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
