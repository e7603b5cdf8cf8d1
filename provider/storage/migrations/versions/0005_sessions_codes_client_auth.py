"""server-side browser sessions, sealed authorization codes, revocation apart, client settings

- ``browser_sessions``: a record per sign-in, so signing out or a password change ends a copied
  cookie too (provider/web/sessions.py).
- ``authorization_codes`` goes: a code is sealed, not stored, so the authorization endpoint
  answers a GET without writing a row; ``redeemed_codes`` records each exchange (once) and the
  token family it started, which a replay revokes. Codes live a minute: the ones outstanding at
  the upgrade fail and their users sign in again.
- ``tokens.refresh_status``: a refresh token is revoked apart from its access token; a rotated one
  presented again is a reuse. Rows that were revoked count as rotated.
- ``clients.token_endpoint_auth_method`` (the one method a client uses; existing confidential
  clients get ``client_secret_basic``, as RFC 7591 defaults, public ones ``none``) and
  ``clients.ticket_rate`` (a per-client ticket creation limit).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 12:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('browser_sessions',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('amr', sa.String(length=16), nullable=False),
    sa.Column('auth_time', sa.Float(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.Column('ended_at', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('browser_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_browser_sessions_user_id'), ['user_id'], unique=False)

    op.create_table('redeemed_codes',
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('family_id', sa.String(length=32), nullable=False),
    sa.Column('redeemed_at', sa.Float(), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['client_id'], ['clients.client_id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('code_hash')
    )
    with op.batch_alter_table('redeemed_codes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_redeemed_codes_expires_at'), ['expires_at'],
                              unique=False)
    op.drop_table('authorization_codes')

    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('refresh_status', sa.String(length=16), nullable=True))
    op.execute("UPDATE tokens SET refresh_status = CASE WHEN revoked THEN 'rotated' ELSE 'active'"
               " END WHERE refresh_token_hash IS NOT NULL")

    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('token_endpoint_auth_method', sa.String(length=32),
                                      nullable=True))
        batch_op.add_column(sa.Column('ticket_rate', sa.String(length=32), nullable=True))
    op.execute("UPDATE clients SET token_endpoint_auth_method = CASE WHEN public THEN 'none'"
               " ELSE 'client_secret_basic' END")
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.alter_column('token_endpoint_auth_method', existing_type=sa.String(length=32),
                              nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_column('ticket_rate')
        batch_op.drop_column('token_endpoint_auth_method')
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.drop_column('refresh_status')

    op.create_table('authorization_codes',
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('redirect_uri', sa.Text(), nullable=True),
    sa.Column('response_type', sa.String(length=16), nullable=False),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('nonce', sa.String(length=512), nullable=True),
    sa.Column('code_challenge', sa.String(length=128), nullable=True),
    sa.Column('code_challenge_method', sa.String(length=8), nullable=True),
    sa.Column('auth_time', sa.Float(), nullable=False),
    sa.Column('amr', sa.String(length=32), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.Column('used', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['client_id'], ['clients.client_id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('code_hash')
    )
    with op.batch_alter_table('redeemed_codes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_redeemed_codes_expires_at'))
    op.drop_table('redeemed_codes')
    with op.batch_alter_table('browser_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_browser_sessions_user_id'))
    op.drop_table('browser_sessions')
