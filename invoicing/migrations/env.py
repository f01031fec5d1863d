"""Alembic runs inside invoicehook's own connection (see store.migrate)."""

from alembic import context

from invoicing.store import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
