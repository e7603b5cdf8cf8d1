"""ticket events: cross-process wake-ups on SQLite; room for in-place ticket updates on PostgreSQL

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 03:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ticket_events',
    sa.Column('seq', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('ticket_id', sa.String(length=32), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('seq'),
    # a purged table must not hand out a seq a watcher has already passed
    sqlite_autoincrement=True,
    )
    with op.batch_alter_table('ticket_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ticket_events_at'), ['at'], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        # Every token poll updates last_poll_at, a column no index covers. With free room on the
        # page PostgreSQL rewrites the row in place (a HOT update) instead of adding an entry to
        # each of the table's six indexes; the default fillfactor of 100 leaves no room.
        op.execute("ALTER TABLE tickets SET (fillfactor = 70)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE tickets RESET (fillfactor)")
    with op.batch_alter_table('ticket_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ticket_events_at'))

    op.drop_table('ticket_events')
