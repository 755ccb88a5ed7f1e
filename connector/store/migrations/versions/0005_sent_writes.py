"""sent writes: a trace of each status sent and not yet confirmed, so a kill cannot make it a person's

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 08:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import connector.store.schema

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'sent_writes',
        sa.Column('id', _Id, autoincrement=True, nullable=False),
        sa.Column('record_id', _Id, nullable=False),
        sa.Column('status', sa.String(length=255), nullable=False),
        sa.Column('sent_at', connector.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['record_id'], ['records.id'], name=op.f('fk_sent_writes_record_id_records'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_sent_writes')),
    )
    op.create_index('ix_sent_writes_record', 'sent_writes', ['record_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_sent_writes_record', table_name='sent_writes')
    op.drop_table('sent_writes')
