"""Alerting: alert state, groups, notification log and send queue, silences, receiver status, rule state.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 07:03:23.190286
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('alert_groups',
    sa.Column('group_key', sa.Text(), nullable=False),
    sa.Column('route_id', sa.String(length=200), nullable=False),
    sa.Column('receiver', sa.String(length=100), nullable=False),
    sa.Column('labels', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('next_flush_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_flush_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('group_key', name=op.f('pk_alert_groups'))
    )
    op.create_index('ix_alert_groups_next_flush_at', 'alert_groups', ['next_flush_at'], unique=False)
    op.create_table('alerts',
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('labels', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('annotations', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ends_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('outbox_id', sa.BigInteger(), nullable=False),
    sa.Column('changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('fingerprint', name=op.f('pk_alerts'))
    )
    op.create_index('ix_alerts_firing', 'alerts', ['status'], unique=False, postgresql_where=sa.text("status = 'firing'"))
    op.create_index('ix_alerts_firing_labels', 'alerts', ['labels'], unique=False, postgresql_using='gin',
                    postgresql_ops={'labels': 'jsonb_path_ops'}, postgresql_where=sa.text("status = 'firing'"))
    op.create_table('notification_log',
    sa.Column('group_key', sa.Text(), nullable=False),
    sa.Column('receiver', sa.String(length=100), nullable=False),
    sa.Column('firing', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('resolved', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('group_key', 'receiver', name=op.f('pk_notification_log'))
    )
    op.create_table('notifications',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('receiver', sa.String(length=100), nullable=False),
    sa.Column('group_key', sa.Text(), nullable=False),
    sa.Column('dedup_key', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('oldest_change_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notifications'))
    )
    op.create_index('ix_notifications_created', 'notifications', ['created_at'], unique=False)
    op.create_index('ix_notifications_due', 'notifications', ['next_attempt_at'], unique=False, postgresql_where=sa.text("state = 'pending'"))
    op.create_index('ix_notifications_order', 'notifications', ['receiver', 'group_key', 'id'], unique=False, postgresql_where=sa.text("state = 'pending'"))
    op.create_table('receiver_status',
    sa.Column('receiver', sa.String(length=100), nullable=False),
    sa.Column('last_success_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('sent_total', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('failed_total', sa.BigInteger(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('receiver', name=op.f('pk_receiver_status'))
    )
    op.create_table('rule_alerts',
    sa.Column('rule', sa.String(length=64), nullable=False),
    sa.Column('instance_id', sa.Integer(), nullable=False),
    sa.Column('object', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('since', sa.DateTime(timezone=True), nullable=False),
    sa.Column('changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('rule', 'instance_id', 'object', name=op.f('pk_rule_alerts'))
    )
    op.create_table('silences',
    sa.Column('id', sa.String(length=36), server_default=sa.text('gen_random_uuid()::text'), nullable=False),
    sa.Column('matchers', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ends_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('reminded_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_silences'))
    )
    op.create_index('ix_silences_ends_at', 'silences', ['ends_at'], unique=False)
    op.create_table('alert_group_members',
    sa.Column('group_key', sa.Text(), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['group_key'], ['alert_groups.group_key'], name=op.f('fk_alert_group_members_group_key_alert_groups'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('group_key', 'fingerprint', name=op.f('pk_alert_group_members'))
    )
    op.create_index('ix_alert_group_members_fingerprint', 'alert_group_members', ['fingerprint'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_alert_group_members_fingerprint', table_name='alert_group_members')
    op.drop_table('alert_group_members')
    op.drop_index('ix_silences_ends_at', table_name='silences')
    op.drop_table('silences')
    op.drop_table('rule_alerts')
    op.drop_table('receiver_status')
    op.drop_index('ix_notifications_order', table_name='notifications', postgresql_where=sa.text("state = 'pending'"))
    op.drop_index('ix_notifications_due', table_name='notifications', postgresql_where=sa.text("state = 'pending'"))
    op.drop_index('ix_notifications_created', table_name='notifications')
    op.drop_table('notifications')
    op.drop_table('notification_log')
    op.drop_index('ix_alerts_firing_labels', table_name='alerts')
    op.drop_index('ix_alerts_firing', table_name='alerts', postgresql_where=sa.text("status = 'firing'"))
    op.drop_table('alerts')
    op.drop_index('ix_alert_groups_next_flush_at', table_name='alert_groups')
    op.drop_table('alert_groups')
