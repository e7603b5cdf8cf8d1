"""Schema migrations (Alembic, shipped in the package under provider/migrations).

``qr-oidc db upgrade`` applies them. On start the provider checks the schema: an empty database is
brought to the current schema at once (a first start needs no extra step), a database that is
behind is refused with a message that says what to run, so an old schema never meets new code.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

MIGRATIONS = Path(__file__).parent / "migrations"


class SchemaBehind(RuntimeError):
    """The database schema is older than this code."""


def _config(connection=None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current(engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine, revision: str = "head") -> None:
    with engine.begin() as conn:
        command.upgrade(_config(conn), revision)


def downgrade(engine, revision: str) -> None:
    with engine.begin() as conn:
        command.downgrade(_config(conn), revision)


def ensure(engine) -> None:
    """Create the schema in an empty database; refuse a database whose schema is behind."""
    revision = current(engine)
    wanted = head()
    if revision == wanted:
        return
    if revision is None and not inspect(engine).get_table_names():
        upgrade(engine)
        return
    raise SchemaBehind(
        f"the database schema is at revision {revision or 'none'}, this qr-oidc needs {wanted}: "
        "run `qr-oidc db upgrade` (back up the database first)"
    )
