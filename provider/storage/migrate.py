"""Schema migrations (Alembic, shipped in the package under provider/storage/migrations).

``qr-oidc db upgrade`` applies them. On start the provider checks the schema: an empty database is
brought to the current schema at once (a first start needs no extra step), a database that is
behind is refused with a message that says what to run, so an old schema never meets new code.
"""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def _migrating(engine):
    """A connection in a transaction for Alembic. On SQLite, foreign keys are off while it runs:
    a batch migration rebuilds a table (copy, drop, rename), and dropping ``clients`` with
    foreign keys on would cascade-delete every ticket and token that points at it. They are
    checked once it is done, and turned on again."""
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")  # (no effect inside a transaction)
            conn.commit()
        try:
            with conn.begin():
                yield conn
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"the migration broke foreign keys: {broken[:5]}")
        finally:
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()


def _steps(current: str | None, revision: str) -> list[tuple[str | None, str, str]]:
    """The migrations from ``current`` to ``revision``, in order: (from, to, first doc line)."""
    script = ScriptDirectory.from_config(_config())
    out, before = [], current
    for rev in reversed(list(script.iterate_revisions(revision, current or "base"))):
        if rev.revision == current:
            continue
        doc = (rev.doc or "").strip().splitlines()
        out.append((before, rev.revision, doc[0] if doc else ""))
        before = rev.revision
    return out


def upgrade(engine, revision: str = "head", on_step=None) -> None:
    """Upgrade in one transaction. ``on_step(index, total, before, after, doc)``, if given, is
    called before each migration (they are applied one at a time, still in that transaction)."""
    with _migrating(engine) as conn:
        if on_step is None:
            command.upgrade(_config(conn), revision)
            return
        plan = _steps(MigrationContext.configure(conn).get_current_revision(), revision)
        for index, (before, after, doc) in enumerate(plan):
            on_step(index, len(plan), before, after, doc)
            command.upgrade(_config(conn), after)


def downgrade(engine, revision: str) -> None:
    with _migrating(engine) as conn:
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
