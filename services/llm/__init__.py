"""Step 5: analysis by an LLM (OpenAI, Azure OpenAI or any OpenAI-compatible endpoint) or the offline analyst.

Modules: ``schema`` (Analysis, JSON schema, tolerant parser), ``prompts`` (sandboxed Jinja2), ``context``
(prompt context and market snapshot), ``offline`` (rules analyst), ``pricing`` (USD cost, user price entries,
local endpoints free), ``client`` (the only module importing ``openai``), ``completion`` (any HTTP 200 body into a
reply or a reason), ``store`` (LLM call records), ``costs`` (cost summaries), ``analyst`` (``analyze``: cache,
budgets, vision, LLM or offline). Import from the modules; this package does not import ``openai`` eagerly.
"""

__all__: list[str] = []
