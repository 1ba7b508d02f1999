"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from models import tables as mt

revision: str = '0001'
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('cache_stats',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('hits', sa.BigInteger(), nullable=False),
    sa.Column('misses', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_cache_stats'))
    )
    op.create_table('contracts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('conid', sa.BigInteger(), nullable=False),
    sa.Column('symbol', sa.String(length=32), nullable=False),
    sa.Column('sec_type', sa.String(length=8), nullable=False),
    sa.Column('exchange', sa.String(length=32), nullable=False),
    sa.Column('primary_exchange', sa.String(length=32), nullable=True),
    sa.Column('currency', sa.String(length=8), nullable=False),
    sa.Column('local_symbol', sa.String(length=64), nullable=True),
    sa.Column('long_name', sa.String(length=256), nullable=True),
    sa.Column('details', mt.JsonDoc(), nullable=False),
    sa.Column('fetched_at', mt.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contracts')),
    sa.UniqueConstraint('conid', name=op.f('uq_contracts_conid'))
    )
    op.create_index(op.f('ix_contracts_symbol'), 'contracts', ['symbol'], unique=False)
    op.create_table('llm_calls',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('analyst', sa.String(length=16), nullable=False),
    sa.Column('prompt_sha256', sa.String(length=64), nullable=False),
    sa.Column('cache_key', sa.String(length=128), nullable=True),
    sa.Column('request_json', sa.Text(), nullable=False),
    sa.Column('response_text', sa.Text(), nullable=True),
    sa.Column('prompt_tokens', sa.Integer(), nullable=True),
    sa.Column('completion_tokens', sa.Integer(), nullable=True),
    sa.Column('cost_usd', mt.ExactDecimal(18, 8), nullable=False),
    sa.Column('latency_ms', sa.Integer(), nullable=True),
    sa.Column('cached', sa.Boolean(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('strategy_name', sa.String(length=128), nullable=True),
    sa.Column('created_at', mt.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_llm_calls'))
    )
    op.create_index(op.f('ix_llm_calls_cache_key'), 'llm_calls', ['cache_key'], unique=False)
    op.create_index(op.f('ix_llm_calls_created_at'), 'llm_calls', ['created_at'], unique=False)
    op.create_table('pnl_snapshots',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', mt.UTCDateTime(), nullable=False),
    sa.Column('realized', mt.ExactDecimal(18, 8), nullable=False),
    sa.Column('unrealized', mt.ExactDecimal(18, 8), nullable=False),
    sa.Column('equity', mt.ExactDecimal(18, 8), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pnl_snapshots'))
    )
    op.create_index(op.f('ix_pnl_snapshots_at'), 'pnl_snapshots', ['at'], unique=False)
    op.create_table('positions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('conid', sa.BigInteger(), nullable=False),
    sa.Column('symbol', sa.String(length=32), nullable=False),
    sa.Column('quantity', mt.ExactDecimal(18, 6), nullable=False),
    sa.Column('avg_cost', mt.ExactDecimal(18, 8), nullable=False),
    sa.Column('realized_pnl', mt.ExactDecimal(18, 8), nullable=False),
    sa.Column('commissions', mt.ExactDecimal(18, 8), nullable=False),
    sa.Column('updated_at', mt.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_positions')),
    sa.UniqueConstraint('conid', name=op.f('uq_positions_conid'))
    )
    op.create_table('prompt_scores',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('template_name', sa.String(length=128), nullable=False),
    sa.Column('template_version', sa.Integer(), nullable=False),
    sa.Column('metrics', mt.JsonDoc(), nullable=False),
    sa.Column('updated_at', mt.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_prompt_scores')),
    sa.UniqueConstraint('day', 'template_name', 'template_version', name=op.f('uq_prompt_scores_day_template_name_template_version'))
    )
    op.create_table('prompt_templates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('body_sha256', sa.String(length=64), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('created_at', mt.UTCDateTime(), nullable=False),
    sa.Column('first_used_at', mt.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_prompt_templates')),
    sa.UniqueConstraint('name', 'version', name=op.f('uq_prompt_templates_name_version'))
    )
    op.create_table('replay_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('strategy_name', sa.String(length=128), nullable=False),
    sa.Column('params', mt.JsonDoc(), nullable=False),
    sa.Column('metrics', mt.JsonDoc(), nullable=False),
    sa.Column('created_at', mt.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_replay_runs'))
    )
    op.create_index(op.f('ix_replay_runs_strategy_name'), 'replay_runs', ['strategy_name'], unique=False)
    op.create_table('strategies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('definition', mt.JsonDoc(), nullable=False),
    sa.Column('symbol', sa.String(length=32), nullable=False),
    sa.Column('conid', sa.BigInteger(), nullable=True),
    sa.Column('bar_size', sa.String(length=16), nullable=False),
    sa.Column('cron', sa.String(length=128), nullable=True),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('prompt_template_name', sa.String(length=128), nullable=True),
    sa.Column('prompt_template_version', sa.Integer(), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', mt.UTCDateTime(), nullable=False),
    sa.Column('updated_at', mt.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_strategies')),
    sa.UniqueConstraint('name', name=op.f('uq_strategies_name'))
    )
    op.create_table('trading_state',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', mt.JsonDoc(), nullable=False),
    sa.Column('updated_at', mt.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_trading_state'))
    )
    op.create_table('signals',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('strategy_id', sa.Integer(), nullable=True),
    sa.Column('strategy_name', sa.String(length=128), nullable=False),
    sa.Column('symbol', sa.String(length=32), nullable=False),
    sa.Column('bar_time', mt.UTCDateTime(), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=True),
    sa.Column('entry', mt.ExactDecimal(18, 8), nullable=True),
    sa.Column('stop', mt.ExactDecimal(18, 8), nullable=True),
    sa.Column('target', mt.ExactDecimal(18, 8), nullable=True),
    sa.Column('risk_reward', sa.Float(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('analyst', sa.String(length=16), nullable=False),
    sa.Column('prompt_template_name', sa.String(length=128), nullable=True),
    sa.Column('prompt_template_version', sa.Integer(), nullable=True),
    sa.Column('flow_run_id', sa.String(length=64), nullable=True),
    sa.Column('llm_call_id', sa.Integer(), nullable=True),
    sa.Column('details', mt.JsonDoc(), nullable=False),
    sa.Column('created_at', mt.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['llm_call_id'], ['llm_calls.id'], name=op.f('fk_signals_llm_call_id_llm_calls'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['strategy_id'], ['strategies.id'], name=op.f('fk_signals_strategy_id_strategies'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signals'))
    )
    op.create_index(op.f('ix_signals_strategy_id_bar_time'), 'signals', ['strategy_id', 'bar_time'], unique=False)
    op.create_index(op.f('ix_signals_strategy_name_bar_time'), 'signals', ['strategy_name', 'bar_time'], unique=False)
    op.create_table('orders',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=128), nullable=False),
    sa.Column('signal_id', sa.Integer(), nullable=True),
    sa.Column('strategy_id', sa.Integer(), nullable=True),
    sa.Column('strategy_name', sa.String(length=128), nullable=True),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('symbol', sa.String(length=32), nullable=False),
    sa.Column('conid', sa.BigInteger(), nullable=True),
    sa.Column('side', sa.String(length=8), nullable=False),
    sa.Column('quantity', mt.ExactDecimal(18, 6), nullable=False),
    sa.Column('order_type', sa.String(length=16), nullable=False),
    sa.Column('limit_price', mt.ExactDecimal(18, 8), nullable=True),
    sa.Column('stop_price', mt.ExactDecimal(18, 8), nullable=True),
    sa.Column('tif', sa.String(length=8), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('ib_order_id', sa.Integer(), nullable=True),
    sa.Column('ib_perm_id', sa.BigInteger(), nullable=True),
    sa.Column('ib_client_id', sa.Integer(), nullable=True),
    sa.Column('filled_quantity', mt.ExactDecimal(18, 6), nullable=False),
    sa.Column('avg_fill_price', mt.ExactDecimal(18, 8), nullable=True),
    sa.Column('commission', mt.ExactDecimal(18, 8), nullable=True),
    sa.Column('realized_pnl', mt.ExactDecimal(18, 8), nullable=True),
    sa.Column('error_code', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('risk_decision', mt.JsonDoc(), nullable=True),
    sa.Column('submit_attempts', sa.Integer(), nullable=False),
    sa.Column('last_submit_error', sa.Text(), nullable=True),
    sa.Column('external', sa.Boolean(), nullable=False),
    sa.Column('flow_run_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', mt.UTCDateTime(), nullable=False),
    sa.Column('updated_at', mt.UTCDateTime(), nullable=False),
    sa.Column('submitted_at', mt.UTCDateTime(), nullable=True),
    sa.Column('terminal_at', mt.UTCDateTime(), nullable=True),
    sa.Column('archived_at', mt.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['parent_id'], ['orders.id'], name=op.f('fk_orders_parent_id_orders'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['signal_id'], ['signals.id'], name=op.f('fk_orders_signal_id_signals'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['strategy_id'], ['strategies.id'], name=op.f('fk_orders_strategy_id_strategies'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_orders')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_orders_idempotency_key'))
    )
    op.create_index(op.f('ix_orders_ib_perm_id'), 'orders', ['ib_perm_id'], unique=False)
    op.create_index(op.f('ix_orders_status'), 'orders', ['status'], unique=False)
    op.create_index(op.f('ix_orders_strategy_id'), 'orders', ['strategy_id'], unique=False)
    op.create_table('fills',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('exec_id', sa.String(length=64), nullable=False),
    sa.Column('order_id', sa.Integer(), nullable=True),
    sa.Column('ib_perm_id', sa.BigInteger(), nullable=True),
    sa.Column('conid', sa.BigInteger(), nullable=True),
    sa.Column('symbol', sa.String(length=32), nullable=False),
    sa.Column('side', sa.String(length=8), nullable=False),
    sa.Column('quantity', mt.ExactDecimal(18, 6), nullable=False),
    sa.Column('price', mt.ExactDecimal(18, 8), nullable=False),
    sa.Column('commission', mt.ExactDecimal(18, 8), nullable=True),
    sa.Column('realized_pnl', mt.ExactDecimal(18, 8), nullable=True),
    sa.Column('executed_at', mt.UTCDateTime(), nullable=False),
    sa.Column('superseded_by', sa.String(length=64), nullable=True),
    sa.Column('created_at', mt.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_fills_order_id_orders'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_fills')),
    sa.UniqueConstraint('exec_id', name=op.f('uq_fills_exec_id'))
    )
    op.create_index(op.f('ix_fills_executed_at'), 'fills', ['executed_at'], unique=False)
    op.create_index(op.f('ix_fills_ib_perm_id'), 'fills', ['ib_perm_id'], unique=False)
    op.create_index(op.f('ix_fills_order_id'), 'fills', ['order_id'], unique=False)
    op.create_table('order_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('order_id', sa.Integer(), nullable=False),
    sa.Column('at', mt.UTCDateTime(), nullable=False),
    sa.Column('from_status', sa.String(length=32), nullable=True),
    sa.Column('to_status', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_order_events_order_id_orders'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_order_events'))
    )
    op.create_index(op.f('ix_order_events_order_id'), 'order_events', ['order_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_order_events_order_id'), table_name='order_events')
    op.drop_table('order_events')
    op.drop_index(op.f('ix_fills_order_id'), table_name='fills')
    op.drop_index(op.f('ix_fills_ib_perm_id'), table_name='fills')
    op.drop_index(op.f('ix_fills_executed_at'), table_name='fills')
    op.drop_table('fills')
    op.drop_index(op.f('ix_orders_strategy_id'), table_name='orders')
    op.drop_index(op.f('ix_orders_status'), table_name='orders')
    op.drop_index(op.f('ix_orders_ib_perm_id'), table_name='orders')
    op.drop_table('orders')
    op.drop_index(op.f('ix_signals_strategy_name_bar_time'), table_name='signals')
    op.drop_index(op.f('ix_signals_strategy_id_bar_time'), table_name='signals')
    op.drop_table('signals')
    op.drop_table('trading_state')
    op.drop_table('strategies')
    op.drop_index(op.f('ix_replay_runs_strategy_name'), table_name='replay_runs')
    op.drop_table('replay_runs')
    op.drop_table('prompt_templates')
    op.drop_table('prompt_scores')
    op.drop_table('positions')
    op.drop_index(op.f('ix_pnl_snapshots_at'), table_name='pnl_snapshots')
    op.drop_table('pnl_snapshots')
    op.drop_index(op.f('ix_llm_calls_created_at'), table_name='llm_calls')
    op.drop_index(op.f('ix_llm_calls_cache_key'), table_name='llm_calls')
    op.drop_table('llm_calls')
    op.drop_index(op.f('ix_contracts_symbol'), table_name='contracts')
    op.drop_table('contracts')
    op.drop_table('cache_stats')
