"""Repositories: typed functions over a SQLAlchemy ``Session``, one module per aggregate.

They flush but never commit: the caller owns the unit of work (``services.db.session_scope``). Wrong input raises
:class:`~services.errors.InputError` listing every problem. Modules: ``strategies``, ``prompt_templates``,
``contracts`` (contract cache), ``llm_calls``, ``signals``, ``trading_state``.
"""
