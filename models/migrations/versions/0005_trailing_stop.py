"""trailing stops: orders.trail_amount / orders.trail_percent (a TRAIL bracket child's distance)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from models import tables as mt

revision: str = '0005'
down_revision: str | Sequence[str] | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('orders') as batch:
        batch.add_column(sa.Column('trail_amount', mt.Price(), nullable=True))
        batch.add_column(sa.Column('trail_percent', mt.Price(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('orders') as batch:
        batch.drop_column('trail_percent')
        batch.drop_column('trail_amount')
