"""Alembic environment: runs on the connection qr-oidc hands it (provider/storage/migrate.py)."""

from alembic import context

from qr_oidc.provider.storage import models  # noqa: F401  (registers the tables)
from qr_oidc.provider.storage.db import Base

target_metadata = Base.metadata


def run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run(connection)
else:  # `alembic` run by hand with sqlalchemy.url set
    from sqlalchemy import create_engine

    engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        run(conn)
