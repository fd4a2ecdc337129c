"""Sweep requests: sweeps asked for through the API, one item per instance for its owning worker.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 09:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ITEM_STATUSES = "('queued', 'running', 'done', 'failed', 'cancelled')"


def upgrade() -> None:
    op.create_table('sweep_requests',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('requested_by', sa.String(length=200), nullable=False),
    sa.Column('requested_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('collectors', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('selector', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sweep_requests'))
    )
    op.create_index('ix_sweep_requests_requested_at', 'sweep_requests', ['requested_at'], unique=False)
    # No shard number on an item: the claiming worker works ownership out, so a re-shard moves
    # queued items to their new owner.
    op.create_table('sweep_request_items',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('request_id', sa.BigInteger(), nullable=False),
    sa.Column('instance_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='queued', nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=True),
    sa.Column('claimed_by', sa.String(length=200), nullable=True),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ok', sa.Integer(), nullable=True),
    sa.Column('failed', sa.Integer(), nullable=True),
    sa.Column('skipped', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.CheckConstraint(f'status in {ITEM_STATUSES}', name=op.f('ck_sweep_request_items_status')),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], name=op.f('fk_sweep_request_items_instance_id_instances'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['request_id'], ['sweep_requests.id'],
                            name=op.f('fk_sweep_request_items_request_id_sweep_requests'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sweep_request_items'))
    )
    op.create_index('ix_sweep_request_items_request_instance', 'sweep_request_items', ['request_id', 'instance_id'],
                    unique=True)
    # What a worker's claim reads: the instances that have queued items, and the leases run out.
    op.create_index('ix_sweep_request_items_queued', 'sweep_request_items', ['instance_id'], unique=False,
                    postgresql_where=sa.text("status = 'queued'"))
    op.create_index('ix_sweep_request_items_leases', 'sweep_request_items', ['lease_until'], unique=False,
                    postgresql_where=sa.text("status = 'running'"))


def downgrade() -> None:
    op.drop_table('sweep_request_items')
    op.drop_table('sweep_requests')
