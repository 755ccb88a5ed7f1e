"""Alembic environment: the connector runs migrations itself, on the connection it passes in."""

from __future__ import annotations

from alembic import context

from connector.store.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the CLI always passes its connection
    raise RuntimeError("run migrations through connector.store.db.upgrade()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
