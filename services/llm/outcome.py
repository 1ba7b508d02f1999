"""The result of step 5: an analysis or the reason there is none, plus what it cost and what was sent."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from models.enums import AnalystKind
from services.llm.prompts import RenderedPrompt
from services.llm.schema import Analysis, FailureKind

__all__ = ["AnalysisFailure", "AnalysisOutcome", "ComponentVote"]


@dataclass(frozen=True)
class ComponentVote:
    """One side of a combined decision (``services/decision.py``): the rules or the LLM, and how it voted."""

    component: str  # "rules" | "llm"
    action: str  # BUY / SELL / HOLD
    confidence: float
    weight: float | None = None  # weighted policy only
    detail: str = ""

    def __str__(self) -> str:
        weight = f", weight {self.weight:g}" if self.weight is not None else ""
        return f"{self.component} {self.action} (confidence {self.confidence:.2f}{weight})"


@dataclass(frozen=True)
class AnalysisFailure:
    """Why no analysis is available. The signal ABSTAINs with ``str(failure)``."""

    kind: FailureKind
    reason: str

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.reason}"


@dataclass(frozen=True)
class AnalysisOutcome:
    """Exactly one of ``analysis`` / ``failure`` is set.

    ``reference_price`` is the newest usable close (instrument currency), used as the entry when the analysis
    names none. ``cost_usd`` is 0 for cache hits, offline runs and calls never made; ``cost_estimated`` is True
    when the model is missing from the price table and the default price was used (or the server reported no
    usage). ``image`` says whether the chart went with the prompt (a text-only model gets the same prompt alone).
    """

    analyst: AnalystKind
    model: str
    prompt: RenderedPrompt
    reference_price: Decimal
    analysis: Analysis | None = None
    failure: AnalysisFailure | None = None
    raw_text: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: Decimal = Decimal(0)
    cost_estimated: bool = False
    latency_ms: int | None = None
    cached: bool = False
    attempts: int = 0
    cache_key: str | None = None
    call_id: int | None = None  # id of the llm_calls record written for this analysis
    policy: str | None = None  # the decision policy that combined rules and LLM (None: one analyst alone)
    votes: tuple[ComponentVote, ...] = ()  # each component's vote when combined
    image: str = "none"  # whether the chart image went with the prompt, and if not why
    local: bool = False  # a local endpoint: free, outside the budget

    def __post_init__(self) -> None:
        if (self.analysis is None) == (self.failure is None):
            raise ValueError("an AnalysisOutcome carries exactly one of analysis / failure")

    @property
    def ok(self) -> bool:
        return self.analysis is not None

    @property
    def votes_text(self) -> str | None:
        """Each component's vote in words (``rules BUY (confidence 0.80); llm BUY (confidence 0.70)``), None when
        one analyst decided alone."""
        return "; ".join(map(str, self.votes)) if self.votes else None
