"""Topology as detected: each instance's role, server identity and upstream, read on every run.

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-03 11:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('instance_topology',
    sa.Column('instance_id', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('server_id', sa.String(length=200), nullable=False),
    sa.Column('database', sa.String(length=200), nullable=False),
    sa.Column('upstream_host', sa.String(length=255), nullable=False),
    sa.Column('upstream_port', sa.Integer(), nullable=False),
    sa.Column('upstream_streaming', sa.Boolean(), nullable=False),
    sa.Column('stream_name', sa.String(length=200), nullable=False),
    sa.Column('read_only', sa.Boolean(), nullable=False),
    sa.Column('reachable', sa.Boolean(), nullable=False),
    sa.Column('checked_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], name=op.f('fk_instance_topology_instance_id_instances'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('instance_id', name=op.f('pk_instance_topology'))
    )
    op.create_index('ix_instance_topology_server_id', 'instance_topology', ['server_id'])


def downgrade() -> None:
    op.drop_table('instance_topology')
