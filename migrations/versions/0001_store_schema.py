"""The store schema: inventory, collector runs, findings, time series, keys, audit, outbox.

Revision ID: 0001
Revises: 
Create Date: 2026-11-26 06:56:46.213311
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_api_keys_key_hash'))
    )
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target', sa.Text(), nullable=False),
    sa.Column('details', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    op.create_index('ix_audit_log_at', 'audit_log', ['at'], unique=False)
    op.create_table('instances',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('engine', sa.String(length=32), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('port', sa.Integer(), nullable=False),
    sa.Column('dbname', sa.String(length=200), nullable=False),
    sa.Column('user', sa.String(length=200), nullable=False),
    sa.Column('credential', sa.String(length=500), nullable=True),
    sa.Column('tls_mode', sa.String(length=16), nullable=False),
    sa.Column('tags', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('enabled', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('overrides', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('source', sa.String(length=16), server_default='manual', nullable=False),
    sa.Column('cloud', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('pinned', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('gone_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_instances')),
    sa.UniqueConstraint('name', name=op.f('uq_instances_name'))
    )
    op.create_index('ix_instances_tags', 'instances', ['tags'], unique=False, postgresql_using='gin')
    op.create_table('outbox',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('finding_id', sa.BigInteger(), nullable=True),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('labels', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('annotations', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ends_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox'))
    )
    op.create_index('ix_outbox_pending', 'outbox', ['id'], unique=False, postgresql_where=sa.text('processed_at is null'))
    op.create_table('query_stats',
    sa.Column('ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('instance_id', sa.Integer(), nullable=False),
    sa.Column('query_id', sa.String(length=128), nullable=False),
    sa.Column('username', sa.String(length=200), server_default='', nullable=False),
    sa.Column('dbname', sa.String(length=200), server_default='', nullable=False),
    sa.Column('interval_s', sa.Float(), nullable=False),
    sa.Column('calls', sa.BigInteger(), nullable=False),
    sa.Column('total_ms', sa.Float(), nullable=False),
    sa.Column('rows', sa.BigInteger(), nullable=False),
    sa.Column('shared_blks_hit', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('shared_blks_read', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('temp_blks_written', sa.BigInteger(), server_default='0', nullable=False),
    postgresql_partition_by='RANGE (ts)'
    )
    op.create_index('ix_query_stats_instance_ts', 'query_stats', ['instance_id', 'ts'], unique=False)
    op.create_table('samples',
    sa.Column('ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('instance_id', sa.Integer(), nullable=False),
    sa.Column('collector', sa.String(length=64), nullable=False),
    sa.Column('metric', sa.String(length=128), nullable=False),
    sa.Column('object', sa.Text(), server_default='', nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    postgresql_partition_by='RANGE (ts)'
    )
    op.create_index('ix_samples_instance_metric_ts', 'samples', ['instance_id', 'metric', 'ts'], unique=False)
    op.create_table('collector_runs',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('instance_id', sa.Integer(), nullable=False),
    sa.Column('collector', sa.String(length=64), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('duration_ms', sa.Float(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('findings', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], name=op.f('fk_collector_runs_instance_id_instances'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_collector_runs'))
    )
    op.create_index('ix_collector_runs_instance_started', 'collector_runs', ['instance_id', 'collector', 'started_at'], unique=False)
    op.create_index('ix_collector_runs_started', 'collector_runs', ['started_at'], unique=False)
    op.create_table('findings',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('instance_id', sa.Integer(), nullable=False),
    sa.Column('collector', sa.String(length=64), nullable=False),
    sa.Column('check', sa.String(length=64), nullable=False),
    sa.Column('object', sa.Text(), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('details', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('recommendation', sa.Text(), nullable=False),
    sa.Column('first_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('state_by', sa.String(length=200), nullable=True),
    sa.Column('state_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('state_note', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], name=op.f('fk_findings_instance_id_instances'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_findings')),
    sa.UniqueConstraint('fingerprint', name=op.f('uq_findings_fingerprint'))
    )
    op.create_index('ix_findings_check', 'findings', ['check'], unique=False)
    op.create_index('ix_findings_live', 'findings', ['instance_id', 'collector'], unique=False, postgresql_where=sa.text("state <> 'resolved'"))
    op.create_index('ix_findings_state_severity', 'findings', ['state', 'severity'], unique=False)
    op.create_table('query_texts',
    sa.Column('instance_id', sa.Integer(), nullable=False),
    sa.Column('query_id', sa.String(length=128), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('first_seen', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], name=op.f('fk_query_texts_instance_id_instances'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('instance_id', 'query_id', name=op.f('pk_query_texts'))
    )


def downgrade() -> None:
    op.drop_table('query_texts')
    op.drop_index('ix_findings_state_severity', table_name='findings')
    op.drop_index('ix_findings_live', table_name='findings', postgresql_where=sa.text("state <> 'resolved'"))
    op.drop_index('ix_findings_check', table_name='findings')
    op.drop_table('findings')
    op.drop_index('ix_collector_runs_started', table_name='collector_runs')
    op.drop_index('ix_collector_runs_instance_started', table_name='collector_runs')
    op.drop_table('collector_runs')
    op.drop_index('ix_samples_instance_metric_ts', table_name='samples')
    op.drop_table('samples')
    op.drop_index('ix_query_stats_instance_ts', table_name='query_stats')
    op.drop_table('query_stats')
    op.drop_index('ix_outbox_pending', table_name='outbox', postgresql_where=sa.text('processed_at is null'))
    op.drop_table('outbox')
    op.drop_index('ix_instances_tags', table_name='instances', postgresql_using='gin')
    op.drop_table('instances')
    op.drop_index('ix_audit_log_at', table_name='audit_log')
    op.drop_table('audit_log')
    op.drop_table('api_keys')
