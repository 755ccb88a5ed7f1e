"""notifications to stage owners: one row per message and channel, unique by key

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import connector.store.schema

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_At = connector.store.schema.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table('notifications',
    sa.Column('id', _Id, autoincrement=True, nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('record_id', _Id, nullable=False),
    sa.Column('transition_id', _Id, nullable=True),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('object', sa.String(length=128), nullable=False),
    sa.Column('external_id', sa.String(length=64), nullable=False),
    sa.Column('stage', sa.String(length=255), nullable=False),
    sa.Column('owner', sa.String(length=64), nullable=False),
    sa.Column('recipient', sa.String(length=255), nullable=True),
    sa.Column('reminder', sa.Integer(), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', _At, nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', _At, nullable=False),
    sa.Column('sent_at', _At, nullable=True),
    sa.Column('updated_at', _At, nullable=False),
    sa.ForeignKeyConstraint(['record_id'], ['records.id'], name=op.f('fk_notifications_record_id_records'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notifications'))
    )
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.create_index('ix_notifications_due', ['state', 'next_attempt_at'], unique=False)
        batch_op.create_index('uq_notifications_key', ['key'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_index('uq_notifications_key')
        batch_op.drop_index('ix_notifications_due')

    op.drop_table('notifications')
