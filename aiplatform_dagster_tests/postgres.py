"""Throwaway databases on the machine's real PostgreSQL server."""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2

POSTGRES_ADMIN_DSN = os.environ.get(
    "AIPLATFORM_TEST_POSTGRES_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)
"""The real PostgreSQL server; tests create their own database on it and drop it."""


@contextmanager
def temporary_database(prefix: str) -> Iterator[str]:
    """Create a database named ``PREFIX_<random>``; yield its ``postgresql://`` URL; drop it
    afterwards, even while clients are still connected."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(POSTGRES_ADMIN_DSN)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
        params = admin.get_dsn_parameters()
        yield f"postgresql://{params['user']}@{params['host']}:{params['port']}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
