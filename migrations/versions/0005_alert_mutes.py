"""Acknowledged and silenced findings mute their alerts: how long a silence lasts, the severity an
acknowledgement covers, and which alerts each receiver was told about before they were muted.

Revision ID: 0005
Revises: 0006
Create Date: 2026-12-05 09:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0005'
# After 0006: 0006_topology already revises 0004, and a second child of 0004 would give Alembic
# two heads (`upgrade head` refuses to run).
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # null: until the finding resolves or is re-opened.
    op.add_column('findings', sa.Column('state_until', sa.DateTime(timezone=True), nullable=True))
    # The severity an acknowledgement was given at; a worse one breaks through (escalation pages).
    op.add_column('findings', sa.Column('state_severity', sa.String(length=16), nullable=True))
    # Alerts the receiver was told were firing, muted since: still owed a resolve, not a reminder.
    op.add_column('notification_log', sa.Column('muted', postgresql.JSONB(astext_type=sa.Text()),
                                                server_default=sa.text("'[]'::jsonb"), nullable=False))


def downgrade() -> None:
    op.drop_column('notification_log', 'muted')
    op.drop_column('findings', 'state_severity')
    op.drop_column('findings', 'state_until')
