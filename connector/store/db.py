"""Opening the database: engine settings per dialect, migrations on first use, one unit of work."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, OperationalError

from connector.errors import ConnectorError
from connector.store.checkpoint import checkpointer_for
from connector.store.revision import MIGRATIONS, head_from_files

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig
    from sqlalchemy.orm import Session, sessionmaker

MIGRATION_LOCK = 0x636F6E6E6D696772  # pg_advisory_xact_lock key held while migrating ("connmigr")
T = TypeVar("T")


class DatabaseError(ConnectorError):
    """The database cannot be used as it is (unreachable, or written by a newer connector)."""


def _alembic_config() -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _fast_sqlite_binds() -> None:
    """Python's sqlite3 binds only exact int, float, str and bytes directly; None and bool first go
    through its adaptation lookup (about half a microsecond each, and a record's row has six Nones and
    two booleans). Registered adapters that return the same values skip it: NULL stays NULL, a bool
    is still bound as 0 or 1. Process-wide, and idempotent."""
    import sqlite3

    sqlite3.register_adapter(type(None), lambda value: value)
    sqlite3.register_adapter(bool, int)


SQLITE_PAGE_SIZE = 2048  # bytes, for stores created from now on


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        _fast_sqlite_binds()
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # 2 KiB pages for a new store (an existing one keeps its size: SQLite ignores this once the
            # file has content). A page of a pull updates some 2,000 rows scattered over the table, one
            # database page each, and every dirty page is written twice (to the WAL, then by the
            # checkpoint): half the page size took the store benchmark from about 20,000 to 25,000
            # records/s. 1 KiB was no faster, and would push a record with many `fields` onto overflow
            # pages.
            cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            # The default 2 MB page cache makes every lookup in a large store a disk read. A fixed cache,
            # not mmap: mapped pages count as resident memory and would grow with the store. 16 MiB holds
            # the indexes' upper levels and a page's worth of rows; beyond it the OS page cache serves
            # reads without counting in our RSS (128 MiB took an 800k-lead sync's peak RSS to 255 MB).
            cursor.execute("PRAGMA cache_size=-16384")
            cursor.execute("PRAGMA temp_store=MEMORY")
            # A checkpoint (copying the WAL into the database file, with an fsync) every 10,000 pages
            # (40 MB) instead of SQLite's 1,000: a page of a pull dirties about 2,000 pages scattered over
            # the table, so the default checkpointed on nearly every commit, which cost more than the
            # page's own writes. Durability is unchanged: a commit is in the WAL either way.
            cursor.execute("PRAGMA wal_autocheckpoint=10000")
            cursor.close()

        return engine
    engine = create_engine(url, pool_pre_ping=True, **kwargs)

    @event.listens_for(engine, "connect", insert=True)
    def _postgres_session(dbapi_connection: Any, _record: Any) -> None:
        # Instants come back in UTC whatever the server's zone: the driver then gives them the plain UTC
        # tzinfo, which it builds and the store converts (to UTC, everywhere) at half the cost of a
        # named zone's (a page's read is 2,000 rows of four or five instants). Every timestamp column
        # holds an instant, and no statement depends on the session's zone. Outside any transaction,
        # so that no rollback undoes it.
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        dbapi_connection.execute("SET TIME ZONE 'UTC'")
        dbapi_connection.autocommit = autocommit

    return engine


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def _current_revision(engine: Engine) -> str | None:
    """The store's revision by plain SQL (None: a new database, or not yet told)."""
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except OperationalError:
        return None
    except DBAPIError:  # PostgreSQL: no such table
        return None


def upgrade(engine: Engine) -> None:
    """Bring the schema to this version's head; refuse a database that a newer connector wrote."""
    head = head_from_files()
    if head is not None and _current_revision(engine) == head:
        return
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config())
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    except OperationalError as exc:
        raise DatabaseError(f"cannot open the database {engine.url.render_as_string()}: {exc.orig}") from None
    if current is not None:
        try:
            script.get_revision(current)
        except Exception:
            raise DatabaseError(
                f"the database is at schema revision {current}, which this connector does not know: it was "
                f"written by a newer version. Upgrade connector, or restore a backup taken before the "
                f"upgrade (this version's newest revision is {script.get_current_head()})."
            ) from None
    if current == script.get_current_head():
        return
    config = _alembic_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Several daemons may start at once on a new database: one migrates while the others
            # wait here, then find the schema at head and go on.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            if MigrationContext.configure(connection).get_current_revision() == script.get_current_head():
                return
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def open_store(url: str, *, migrate: bool = True, **kwargs: Any) -> Store:
    engine = make_engine(url, **kwargs)
    if migrate:
        try:
            upgrade(engine)
        except BaseException:
            engine.dispose()  # no connection left open behind a refused database
            raise
    return Store(engine)


# PostgreSQL: deadlock detected, serialization failure. The whole transaction is safe to run again.
_RETRY_SQLSTATES = frozenset({"40P01", "40001"})


def _retryable(exc: BaseException) -> bool:
    # A lost connection, a busy SQLite file, a deadlock: worth another go; integrity errors never are.
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in _RETRY_SQLSTATES:
        return True
    return isinstance(exc, OperationalError) and "database is locked" in str(exc.orig)


class Store:
    """The database, and the one unit of work that commits or rolls back."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions: sessionmaker[Session] | None = None  # the ORM is imported by the first unit of work
        self.checkpointer = checkpointer_for(engine.url.database, engine.dialect.name)

    def _session_factory(self) -> sessionmaker[Session]:
        if self._sessions is None:
            from sqlalchemy.orm import sessionmaker

            self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        return self._sessions

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._session_factory()() as session, session.begin():
            yield session
        if self.checkpointer is not None:
            self.checkpointer.poke()  # committed: its pages go to the database file off this thread

    def run(self, work: Callable[[Session], T], attempts: int = 4) -> T:
        """Run `work` in one transaction, again from the start if the connection was lost."""
        from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

        for attempt in Retrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(attempts),
            wait=wait_random_exponential(multiplier=0.2, max=5),
            reraise=True,
        ):
            with attempt, self.transaction() as session:
                return work(session)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.close()
        self.engine.dispose()
