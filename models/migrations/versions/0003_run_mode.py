"""orders.run_mode (dry_run / paper / live / replay), backfilled from the risk decision's ``dry_run`` key

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

Before this revision an order's mode was a ``dry_run`` key inside its risk-decision JSON. Rows with
``dry_run: true`` become ``run_mode = 'dry_run'`` and lose the key; the others went to a socket broker, paper
or live was not recorded: their ``run_mode`` stays NULL. Downgrade puts the key back.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from models import tables as mt

revision: str = '0003'
down_revision: str | Sequence[str] | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_orders = sa.table(
    'orders',
    sa.column('id', sa.Integer()),
    sa.column('risk_decision', mt.JsonDoc()),
    sa.column('run_mode', sa.String(16)),
)


def _rows() -> list[tuple[int, dict[str, Any] | None, str | None]]:
    result = op.get_bind().execute(sa.select(_orders.c.id, _orders.c.risk_decision, _orders.c.run_mode))
    return [(r[0], r[1], r[2]) for r in result]


def upgrade() -> None:
    with op.batch_alter_table('orders') as batch:
        batch.add_column(sa.Column('run_mode', sa.String(length=16), nullable=True))
    bind = op.get_bind()
    for order_id, doc, _mode in _rows():
        if not isinstance(doc, dict) or 'dry_run' not in doc:
            continue
        rest = {k: v for k, v in doc.items() if k != 'dry_run'}
        mode = 'dry_run' if doc['dry_run'] else None
        bind.execute(_orders.update().where(_orders.c.id == order_id).values(run_mode=mode, risk_decision=rest))


def downgrade() -> None:
    bind = op.get_bind()
    for order_id, doc, mode in _rows():
        restored = dict(doc or {}) | {'dry_run': mode == 'dry_run'}
        bind.execute(_orders.update().where(_orders.c.id == order_id).values(risk_decision=restored))
    with op.batch_alter_table('orders') as batch:
        batch.drop_column('run_mode')
