"""Rules and LLM combined: a strategy's ``decision.policy`` over its indicator rules and the LLM's analysis.

The one decision path: :func:`services.llm.analyst.analyze` (strategy runs and LLM replays) and the offline replay
call these functions, then :func:`services.signals.generate_signal` applies the filters to the result.

* ``llm_only`` (default): the LLM's analysis stands; the rules are not consulted.
* ``rules_only``: the rules decide (:func:`rules_decision`); no LLM call is made.
* ``both_agree``: BUY/SELL only when the rules and the LLM say the same; anything else is HOLD. The confidence is
  the lower of the two; entry, stop and target are the LLM's (the rules' ATR levels where it gave none).
* ``weighted``: ``score = (rules points + llm_weight * llm confidence * llm direction) / (rules total + llm_weight)``
  (direction +1 BUY, -1 SELL, 0 HOLD; rules points and total as in :mod:`services.rules`); BUY at
  ``score >= threshold``, SELL at ``<= -threshold``, else HOLD; confidence ``0.5 + 0.45 |score|`` (HOLD
  ``0.5 - 0.45 |score|``). Levels from the side that voted the winning action (the LLM first).

Both combined policies need an analysis from the LLM: a failed LLM call stays a failure (the signal ABSTAINs with
its reason); nothing is ordered on half a view. Without an LLM configured every policy falls back to the rules,
labelled offline (:func:`rules_decision` notes it in the reasoning). The reasoning (and so the signal's reason)
shows each component's vote; :attr:`AnalysisOutcome.votes` holds them as data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Final

from models.enums import DecisionPolicy
from models.strategy import Decision, IndicatorSpec
from services.llm.context import MarketSnapshot
from services.llm.offline import rules_analysis
from services.llm.outcome import AnalysisOutcome, ComponentVote
from services.llm.schema import MAX_REASONING_CHARS, Analysis
from services.rules import RulesVerdict, vote_action, vote_confidence

__all__ = ["combine", "rules_decision"]

_DIRECTION: Final = {"BUY": 1, "SELL": -1, "HOLD": 0}
# Room for the policy's own words before the components' reasoning is cut to fit the schema's limit.
_PART_CHARS: Final = (MAX_REASONING_CHARS - 400) // 2


def _clip(text: str, limit: int = _PART_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def rules_decision(snapshot: MarketSnapshot, specs: Sequence[IndicatorSpec], decision: Decision) -> Analysis:
    """The rules' analysis standing alone: ``rules_only``, or any policy when no LLM is configured (noted)."""
    _, analysis = rules_analysis(snapshot, specs, decision.rules, threshold=decision.rules_threshold)
    if decision.policy is DecisionPolicy.LLM_ONLY:  # the offline analyst, as without any policy
        return analysis
    note = f" [policy {decision.policy.value}" + (
        "]" if decision.policy is DecisionPolicy.RULES_ONLY else ": no LLM configured, the rules decide]"
    )
    return analysis.model_copy(update={"reasoning": _clip(analysis.reasoning, MAX_REASONING_CHARS - len(note)) + note})


def _levels(action: str, llm: Analysis, ruled: Analysis) -> dict[str, object]:
    """Entry/stop/target for ``action``: the LLM's when it voted so (gaps filled by the rules'), else the rules'."""
    if llm.action == action:
        return {
            "entry": llm.entry or ruled.entry,
            "stop": llm.stop or (ruled.stop if ruled.action == action else None),
            "target": llm.target or (ruled.target if ruled.action == action else None),
        }
    if ruled.action == action:
        return {"entry": ruled.entry, "stop": ruled.stop, "target": ruled.target}
    return {"entry": llm.entry or ruled.entry, "stop": None, "target": None}


def combine(
    outcome: AnalysisOutcome, snapshot: MarketSnapshot, specs: Sequence[IndicatorSpec], decision: Decision
) -> AnalysisOutcome:
    """Apply a combined policy (``both_agree`` / ``weighted``) to the LLM's ``outcome``; other policies and failed
    analyses are returned unchanged."""
    llm = outcome.analysis
    if llm is None or decision.policy not in (DecisionPolicy.BOTH_AGREE, DecisionPolicy.WEIGHTED):
        return outcome
    verdict, ruled = rules_analysis(snapshot, specs, decision.rules, threshold=decision.rules_threshold)
    rules_text = f"rules: score {verdict.score:+.2f} -> {verdict.action}. {verdict.text or 'no applicable rule'}"
    llm_text = f"LLM ({outcome.model}): {llm.action}, confidence {llm.confidence:.2f}: {llm.reasoning}"
    if decision.policy is DecisionPolicy.BOTH_AGREE:
        action, confidence, head, votes = _both_agree(verdict, llm)
    else:
        action, confidence, head, votes = _weighted(verdict, llm, decision)
    levels = _levels(action, llm, ruled)
    reasoning = f"{head}. {_clip(rules_text)} | {_clip(llm_text)}"[:MAX_REASONING_CHARS]
    combined = Analysis.model_validate(
        {
            "action": action,
            "confidence": confidence,
            "reasoning": reasoning,
            "horizon_bars": llm.horizon_bars,
            **levels,
        }
    )
    return replace(outcome, analysis=combined, policy=decision.policy.value, votes=votes)


def _both_agree(verdict: RulesVerdict, llm: Analysis) -> tuple[str, float, str, tuple[ComponentVote, ...]]:
    rules_vote = ComponentVote("rules", verdict.action, verdict.confidence, detail=f"score {verdict.score:+.2f}")
    llm_vote = ComponentVote("llm", llm.action, llm.confidence)
    confidence = min(verdict.confidence, llm.confidence)
    if verdict.action == llm.action and llm.action != "HOLD":
        head = f"both_agree: {rules_vote} and {llm_vote} agree -> {llm.action}"
        return llm.action, confidence, head, (rules_vote, llm_vote)
    why = "both HOLD" if verdict.action == llm.action else "they disagree"
    head = f"both_agree: {rules_vote}, {llm_vote}: {why} -> HOLD"
    return "HOLD", confidence, head, (rules_vote, llm_vote)


def _weighted(
    verdict: RulesVerdict, llm: Analysis, decision: Decision
) -> tuple[str, float, str, tuple[ComponentVote, ...]]:
    points = verdict.score * verdict.total
    llm_points = decision.llm_weight * llm.confidence * _DIRECTION[llm.action]
    score = (points + llm_points) / (verdict.total + decision.llm_weight)
    action = vote_action(score, decision.threshold)
    votes = (
        ComponentVote("rules", verdict.action, verdict.confidence, verdict.total, f"points {points:+.2f}"),
        ComponentVote("llm", llm.action, llm.confidence, decision.llm_weight, f"points {llm_points:+.2f}"),
    )
    head = (
        f"weighted: rules {points:+.2f} of {verdict.total:g}, LLM {llm.action} {llm.confidence:.2f} x weight "
        f"{decision.llm_weight:g} = {llm_points:+.2f} -> score {score:+.2f} (threshold {decision.threshold:g}) "
        f"-> {action}"
    )
    return action, vote_confidence(action, score), head, votes
