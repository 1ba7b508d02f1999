"""order expiry and reference price, kill-switch history

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from models import tables as mt

revision: str = '0002'
down_revision: str | Sequence[str] | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('orders') as batch:
        batch.add_column(sa.Column('expires_at', mt.UTCDateTime(), nullable=True))
        batch.add_column(sa.Column('reference_price', mt.ExactDecimal(18, 8), nullable=True))
    op.create_table('kill_switch_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', mt.UTCDateTime(), nullable=False),
    sa.Column('engaged', sa.Boolean(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('changed_by', sa.String(length=128), nullable=True),
    sa.Column('ended_orders', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_kill_switch_events'))
    )


def downgrade() -> None:
    op.drop_table('kill_switch_events')
    with op.batch_alter_table('orders') as batch:
        batch.drop_column('reference_price')
        batch.drop_column('expires_at')
