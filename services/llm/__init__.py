"""Step 5: analysis by an LLM (any OpenAI-compatible endpoint) or the deterministic offline analyst.

Modules: ``schema`` (Analysis, JSON schema, tolerant parser), ``prompts`` (sandboxed Jinja2), ``context``
(prompt context and market snapshot), ``offline`` (rules analyst), ``pricing`` (USD cost), ``client`` (the
only module importing ``openai``), ``store`` (LLM call records), ``analyst`` (``analyze``: cache, budget,
LLM or offline). Import from the modules; this package does not import ``openai`` eagerly.
"""

__all__: list[str] = []
