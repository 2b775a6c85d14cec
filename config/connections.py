"""Database connections the server closed while they sat idle between requests.

Connections are kept open between requests (CONN_MAX_AGE None). When PostgreSQL restarts
or ends a backend, the server sends its reason and closes the socket, which the web
process only finds out by failing the next request's first query (a 500). At each
request's start, an idle connection whose socket has something to read (the server
never speaks unasked) is closed instead, so Django opens a fresh one: a syscall, not the
round trip of CONN_HEALTH_CHECKS.
"""

import select

import psycopg
from django.db import connections


def close_dead_connections(**_) -> None:
    for connection in connections.all(initialized_only=True):
        raw = connection.connection
        if raw is None or connection.vendor != "postgresql" or connection.in_atomic_block:
            continue
        try:
            readable, _, _ = select.select([raw.fileno()], [], [], 0)
        except (OSError, ValueError, psycopg.Error):  # the socket is gone already
            readable = True
        if readable:
            connection.close()
