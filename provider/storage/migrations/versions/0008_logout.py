"""logout: RP-Initiated and Back-Channel Logout, sessions the phone can end

- ``clients.post_logout_redirect_uris`` and ``clients.backchannel_logout_uri``;
- ``tokens.sid``: the sign-in a token descends from (the ID token's ``sid``);
- ``browser_sessions.sid``: a password session's public id.

Sessions made before this upgrade have no sid: their tokens are ended with their family only.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 17:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('post_logout_redirect_uris', sa.JSON(), nullable=False,
                                      server_default='[]'))
        batch_op.add_column(sa.Column('backchannel_logout_uri', sa.String(length=2000),
                                      nullable=True))
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sid', sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f('ix_tokens_sid'), ['sid'], unique=False)
    with op.batch_alter_table('browser_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sid', sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f('ix_browser_sessions_sid'), ['sid'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('browser_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_browser_sessions_sid'))
        batch_op.drop_column('sid')
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tokens_sid'))
        batch_op.drop_column('sid')
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_column('backchannel_logout_uri')
        batch_op.drop_column('post_logout_redirect_uris')
