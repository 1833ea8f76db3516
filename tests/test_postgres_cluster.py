"""The throwaway PostgreSQL cluster the database tests run against."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from highway.testing.postgres import PostgresCluster, find_postgres_bin


@pytest.fixture
def pg_bin() -> Path:
    """The PostgreSQL server binaries, or skip the test."""
    found = find_postgres_bin()
    if found is None:
        pytest.skip(
            "PostgreSQL server binaries not found (no pg_config, /usr/lib/postgresql/*/bin or "
            "initdb on PATH): install Debian's `postgresql` or set HIGHWAY_PG_BIN"
        )
    return found


def select_one(url: str) -> int:
    with psycopg.connect(url, connect_timeout=5) as conn:
        return conn.execute("SELECT 1").fetchone()[0]  # type: ignore[index]


def test_cluster_goes_down_and_comes_back(pg_bin: Path):
    with PostgresCluster(pg_bin) as pg:
        assert pg.running
        assert pg.url() == f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
        assert select_one(pg.url()) == 1
        with psycopg.connect(pg.url(), connect_timeout=5) as conn:
            assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
            assert conn.execute("SHOW fsync").fetchone() == ("off",)

        pg.stop()
        pg.stop()  # a second stop is harmless
        assert not pg.running
        with pytest.raises(psycopg.OperationalError):
            select_one(pg.url())

        port = pg.port
        pg.start()
        assert pg.port == port  # same URL as before the outage
        assert select_one(pg.url()) == 1
        base_dir = pg.base_dir
        assert base_dir is not None

    assert not pg.running
    assert not base_dir.exists()
    pg.destroy()  # a second destroy is harmless


def test_pg_bin_override(pg_bin: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("HIGHWAY_PG_BIN", os.fspath(pg_bin))
    assert find_postgres_bin() == pg_bin

    # A wrong override is an error, not a silent skip of the database tests.
    monkeypatch.setenv("HIGHWAY_PG_BIN", os.fspath(tmp_path))
    with pytest.raises(FileNotFoundError, match="HIGHWAY_PG_BIN"):
        find_postgres_bin()
