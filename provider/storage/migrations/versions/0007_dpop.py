"""DPoP (RFC 9449): clients that require it, tickets and tokens bound to a key

- ``clients.require_dpop``: every token of the client must be bound (``--require-dpop``);
- ``tickets.dpop_jkt``: a ticket created with a proof (or ``dpop_jkt``) is redeemed only by
  polls that prove the same key;
- ``tokens.dpop_jkt``: the key an access token (and a public client's refresh token) is bound
  to.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 16:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('require_dpop', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dpop_jkt', sa.String(length=64), nullable=True))
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dpop_jkt', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.drop_column('dpop_jkt')
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_column('dpop_jkt')
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_column('require_dpop')
