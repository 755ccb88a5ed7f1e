"""day one at a real org: degraded activity, write-back paused for the admin, merged records

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 05:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import connector.store.schema

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_At = connector.store.schema.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table('source_health') as batch:
        batch.add_column(sa.Column('failed_job', sa.String(length=16), nullable=True))
        batch.add_column(sa.Column('activity_error', sa.Text(), nullable=True))
        batch.add_column(sa.Column('activity_error_at', _At, nullable=True))
        batch.add_column(sa.Column('activity_retry_at', _At, nullable=True))
        batch.add_column(sa.Column('activity_failures', sa.Integer(), server_default=sa.text('0'), nullable=False))
        batch.add_column(sa.Column('writeback_error', sa.Text(), nullable=True))
        batch.add_column(sa.Column('writeback_error_at', _At, nullable=True))
    with op.batch_alter_table('records') as batch:
        batch.add_column(sa.Column('merged_into', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('records') as batch:
        batch.drop_column('merged_into')
    with op.batch_alter_table('source_health') as batch:
        for name in ('writeback_error_at', 'writeback_error', 'activity_failures', 'activity_retry_at',
                     'activity_error_at', 'activity_error', 'failed_job'):
            batch.drop_column(name)
