"""drop the index on tickets.status: no query looks tickets up by status alone

Every status condition comes with the ticket's id or the digest of one of its secrets, which have
indexes of their own. On PostgreSQL the index on ``status`` made every transition (scan, approve,
deny, redeem) a non-HOT update, which writes an entry into each of the table's indexes; without
it, and with the room migration 0003 leaves on each page, the row is rewritten in place.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 05:30:00
"""

from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tickets_status'))


def downgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tickets_status'), ['status'], unique=False)
