"""Data quality checks (issue 17): declared checks (freshness, volume, completeness, assertion,
schema) and the latest result of each check per instance and table.

A check's definition is kept whole as JSONB (validated by collectors/quality/checks.py); name,
kind and origin are columns so they can be listed and replaced by origin (config, dbt, api).
The latest result row per (check, instance, table) holds what the next run compares against
(the previous run's columns for schema drift) and what GET /api/v1/freshness shows; the measured
values' history is in samples.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 14:05:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('quality_checks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('origin', sa.String(length=16), server_default='api', nullable=False),
    sa.Column('definition', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('enabled', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('created_by', sa.String(length=200), server_default='', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_quality_checks')),
    sa.UniqueConstraint('name', name=op.f('uq_quality_checks_name'))
    )
    op.create_table('quality_check_results',
    sa.Column('check_id', sa.Integer(), nullable=False),
    sa.Column('instance_id', sa.Integer(), nullable=False),
    sa.Column('object', sa.Text(), nullable=False),
    sa.Column('ran_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('details', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"),
              nullable=False),
    sa.ForeignKeyConstraint(['check_id'], ['quality_checks.id'], name=op.f('fk_quality_check_results_check_id_quality_checks'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], name=op.f('fk_quality_check_results_instance_id_instances'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('check_id', 'instance_id', 'object', name=op.f('pk_quality_check_results'))
    )
    op.create_index('ix_quality_check_results_instance_id', 'quality_check_results', ['instance_id'])


def downgrade() -> None:
    op.drop_table('quality_check_results')
    op.drop_table('quality_checks')
