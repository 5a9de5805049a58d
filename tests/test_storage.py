"""The storage layer: one `Database` interface over SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanfold.errors import StoreError
from fanfold.scheduling.storage import (
    Database,
    PostgresDatabase,
    Schema,
    SqliteDatabase,
    open_database,
)


class ToyStoreError(StoreError):
    """What the toy store raises."""


def toy_schema(table: str) -> Schema:
    return Schema(
        f"CREATE TABLE IF NOT EXISTS {table} (k TEXT PRIMARY KEY, v DOUBLE PRECISION NOT NULL)",
        {table: ("k", "v")},
        "tests.toy.SCHEMA",
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def target_and_table(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    table = f"fanfold_toy_{uuid.uuid4().hex[:10]}"
    if request.param == "sqlite":
        yield str(tmp_path / "nested" / "toy.db"), table
        return
    dsn = request.getfixturevalue("postgres_dsn")
    yield dsn, table
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


def open_toy(target: str, table: str) -> Database:
    return open_database(target, what="toy target", error=ToyStoreError, schema=toy_schema(table))


def test_both_backends_create_the_tables_and_read_back_what_was_written(target_and_table):
    target, table = target_and_table
    db = open_toy(target, table)
    try:
        expected = PostgresDatabase if target.startswith("postgresql") else SqliteDatabase
        assert isinstance(db, expected)
        db.executemany(f"INSERT INTO {table} (k, v) VALUES (?, ?)", [("a", 1.5), ("b", 2.0)])
        db.execute(f"UPDATE {table} SET v = ? WHERE k = ?", (4.0, "b"))
        assert sorted(db.query(f"SELECT k, v FROM {table} WHERE v > ?", (1.0,))) == [
            ("a", 1.5),
            ("b", 4.0),
        ]
    finally:
        db.close()
    again = open_toy(target, table)  # the tables exist now: used as they are
    try:
        assert len(again.query(f"SELECT k FROM {table}")) == 2
    finally:
        again.close()


def test_a_failed_statement_raises_one_of_the_backends_errors(target_and_table):
    target, table = target_and_table
    db = open_toy(target, table)
    try:
        with pytest.raises(db.errors) as caught:
            db.query("SELECT no_such_column FROM " + table)
        assert "\n" not in db.reason(caught.value)
    finally:
        db.close()


def test_an_unreachable_database_is_one_line_with_the_password_masked():
    with pytest.raises(ToyStoreError) as caught:
        open_toy("postgresql://fanfold:s3cret-pw@127.0.0.1:1/toy", "fanfold_toy")
    message = str(caught.value)
    assert "\n" not in message and "s3cret-pw" not in message
    assert message.startswith("toy target postgresql://fanfold:***@127.0.0.1:1/toy: cannot connect")
    assert caught.value.setting == "target"
    assert caught.value.target == "postgresql://fanfold:***@127.0.0.1:1/toy"


@pytest.mark.parametrize("where", ["under a file", "not a database", "other tables"])
def test_an_unusable_sqlite_file_is_one_line_naming_it(tmp_path: Path, where: str):
    plain = tmp_path / "plain.txt"
    plain.write_text("not a database, just text " * 100)
    other = tmp_path / "other.db"
    open_toy(str(other), "fanfold_toy").close()
    SqliteDatabase(
        str(other),
        what="toy target",
        error=ToyStoreError,
        schema=Schema("DROP TABLE fanfold_toy; CREATE TABLE fanfold_toy (k TEXT)", {}, "x"),
    ).close()
    target = {"under a file": plain / "toy.db", "not a database": plain, "other tables": other}
    with pytest.raises(ToyStoreError) as caught:
        open_toy(str(target[where]), "fanfold_toy")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"toy target {str(target[where])!r}: cannot use it as a SQLite file")
    assert message.endswith("pass a writable SQLite file path or a postgresql:// URL")


@pytest.mark.postgres
def test_a_broken_postgres_connection_is_reopened_once(postgres_dsn: str):
    table = f"fanfold_toy_{uuid.uuid4().hex[:10]}"
    db = open_database(
        postgres_dsn, what="toy target", error=ToyStoreError, schema=toy_schema(table)
    )
    assert isinstance(db, PostgresDatabase)
    try:
        db.execute(f"INSERT INTO {table} (k, v) VALUES (?, ?)", ("a", 1.0))
        db.conn.close()  # as a restarted server leaves it
        assert db.query(f"SELECT v FROM {table}") == [(1.0,)]
    finally:
        db.execute(f"DROP TABLE {table}")
        db.close()


async def test_an_unreachable_checkpoint_database_is_one_line_with_the_password_masked():
    from fanfold.checkpoints import CheckpointStoreError, open_checkpointer

    with pytest.raises(CheckpointStoreError) as caught:
        async with open_checkpointer("postgresql://fanfold:s3cret-pw@127.0.0.1:1/runs"):
            pass
    message = str(caught.value)
    assert "\n" not in message and "s3cret-pw" not in message
    shown = "postgresql://fanfold:***@127.0.0.1:1/runs"
    assert message.startswith(f"checkpoint target {shown}: cannot connect"), message
    assert caught.value.setting == "checkpoint" and caught.value.target == shown


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_shared_limits_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A SQLite file, or a PostgreSQL schema of its own (the tables' names are fixed)."""
    if request.param == "sqlite":
        yield str(tmp_path / "limits.db")
        return
    import psycopg

    dsn = request.getfixturevalue("postgres_dsn")
    schema = f"fanfold_old_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in dsn else "?"
    yield f"{dsn}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_a_shared_limits_store_made_by_an_older_release_gains_the_new_columns(
    empty_shared_limits_target: str,
):
    from fanfold.scheduling.shared_store import STATE_COLUMNS, lock_state, open_store

    target = empty_shared_limits_target
    # The table as the release before the minute-quota columns made it.
    old_columns = [c for c in STATE_COLUMNS if c not in {"quota_left", "quota_until"}]
    declared = ", ".join(f'"{c}" DOUBLE PRECISION NOT NULL DEFAULT 0' for c in old_columns)
    old_schema = f"CREATE TABLE fanfold_pace_state (endpoint TEXT PRIMARY KEY, {declared})"
    old_db = open_database(
        target,
        what="old shared limits",
        error=ToyStoreError,
        schema=Schema(old_schema, {"fanfold_pace_state": old_columns}, "old"),
    )
    try:
        old_db.execute("INSERT INTO fanfold_pace_state (endpoint) VALUES (?)", ("ep",))
    finally:
        old_db.close()

    store = open_store(target, "ep")
    try:
        with store.transaction("ep") as tx:
            row = lock_state(store, tx, "ep")
        assert row is not None and len(row) == len(STATE_COLUMNS)
        assert dict(zip(STATE_COLUMNS, row, strict=True))["quota_until"] == 0
    finally:
        store.close()
