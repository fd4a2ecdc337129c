"""Collector state in the store: a base snapshot per (instance, collector) and the patches since.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 10:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # seq counts every state change; the base holds the state as of base_seq, and the patches
    # base_seq+1 .. seq rebuild the current state. A run writes one small patch; the base is
    # rewritten only when the patches outgrow it.
    op.create_table('collector_state',
    sa.Column('instance_id', sa.Integer(), nullable=False),
    sa.Column('collector', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('base_seq', sa.BigInteger(), nullable=False),
    sa.Column('base', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('patch_bytes', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], name=op.f('fk_collector_state_instance_id_instances'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('instance_id', 'collector', name=op.f('pk_collector_state'))
    )
    op.create_table('collector_state_patches',
    sa.Column('instance_id', sa.Integer(), nullable=False),
    sa.Column('collector', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('patch', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.ForeignKeyConstraint(['instance_id', 'collector'], ['collector_state.instance_id', 'collector_state.collector'],
                            name=op.f('fk_collector_state_patches_instance_id_collector_state'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('instance_id', 'collector', 'seq', name=op.f('pk_collector_state_patches'))
    )
    # Lock first, then read the seq in a statement of its own: each statement of a volatile
    # function takes a fresh snapshot, so a state another process wrote and unlocked just before
    # we locked is seen. Returns the collectors locked, with their stored seq (0: no state yet).
    op.execute(CLAIM_FUNCTION)


CLAIM_FUNCTION = """
create function dbfleet_claim(p_instance int, p_collectors text[], p_keys int[])
returns table (collector text, seq bigint) language plpgsql volatile as $$
declare
    got text[] := '{}';
begin
    select coalesce(array_agg(u.n), '{}') into got
    from unnest(p_collectors, p_keys) as u(n, k) where pg_try_advisory_lock(p_instance, u.k);
    return query
        select g.n, coalesce(s.seq, 0)::bigint from unnest(got) as g(n)
        left join collector_state s on s.instance_id = p_instance and s.collector = g.n;
end
$$
"""


def downgrade() -> None:
    op.execute('drop function dbfleet_claim(int, text[], int[])')
    op.drop_table('collector_state_patches')
    op.drop_table('collector_state')
