"""push login (CIBA), its deliveries, and the confirmation screen's risk hints

- ``clients.backchannel_token_delivery_mode`` (poll | ping) and
  ``clients.backchannel_client_notification_endpoint``;
- ``tickets.binding_message`` and ``tickets.notification_token`` (sealed), and an index on
  ``tickets.user_id`` (a user's inbox of push requests);
- ``deliveries``: CIBA pings and push gateway notices to send, retried with backoff;
- ``user_signals``: a user's approvals per requester and recent denials (the ``risk`` hints).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 15:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('backchannel_token_delivery_mode', sa.String(length=8),
                                      nullable=True))
        batch_op.add_column(sa.Column('backchannel_client_notification_endpoint',
                                      sa.String(length=2000), nullable=True))
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('binding_message', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('notification_token', sa.Text(), nullable=True))
        batch_op.create_index(batch_op.f('ix_tickets_user_id'), ['user_id'], unique=False)

    op.create_table('deliveries',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('url', sa.String(length=2000), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('authorization', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('next_at', sa.Float(), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.Column('locked_until', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deliveries_next_at'), ['next_at'], unique=False)

    op.create_table('user_signals',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'kind', 'key')
    )
    with op.batch_alter_table('user_signals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_user_signals_at'), ['at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('user_signals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_user_signals_at'))
    op.drop_table('user_signals')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deliveries_next_at'))
    op.drop_table('deliveries')
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tickets_user_id'))
        batch_op.drop_column('notification_token')
        batch_op.drop_column('binding_message')
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_column('backchannel_client_notification_endpoint')
        batch_op.drop_column('backchannel_token_delivery_mode')
