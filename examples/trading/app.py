"""Trading desk: (sentiment ∥ technical analysis) → risk assessment → position sizing.

Run with ``agenticflow worker --app agenticflow.examples.trading.app:app`` and submit
``workflow.yaml`` with an input such as ``input.json``::

    {"symbol": "ACME", "capital": 100000, "risk_per_trade": 0.01}

The price series (``prices.csv``) and the news headlines (``headlines.json``) are
bundled with the example, so every run gives the same answer. The numbers
are rules; once the position is sized, a model writes the desk a short note
on it (``ctx.llm``, streamed as it is written): the scripted one of
``llm-script.yaml`` unless the workers have a real one
(``AGENTICFLOW_LLM_BASE_URL``; see :mod:`agenticflow.examples.local_model`).
This is a teaching example, not investment advice.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

from agenticflow import AgentApp, NonRetryableError, TaskContext
from agenticflow.examples.local_model import LocalModel

app = AgentApp("trading")
LocalModel.serve(app, Path(__file__).with_name("llm-script.yaml"))

NOTE_INSTRUCTIONS = (
    "You assist a trading desk. In three short sentences, explain the position below "
    "to the desk from the figures given: the direction and why, the size and what "
    "caps it, and the risk at the stop. Plain text; add no figure, no advice."
)
"""The note writer's instructions (the model's system message)."""

DATA_DIR = Path(__file__).parent
SYMBOL = "ACME"
"""The one symbol the bundled data covers."""

TRADING_DAYS = 252

LEXICON: dict[str, float] = {
    "beats": 2,
    "upgrade": 2,
    "upgrades": 2,
    "surge": 2,
    "surges": 2,
    "wins": 2,
    "record": 1,
    "strong": 1,
    "growth": 1,
    "raises": 1,
    "expands": 1,
    "partnership": 1,
    "settles": 1,
    "profit": 1,
    "misses": -2,
    "lawsuit": -2,
    "recall": -2,
    "probe": -2,
    "downgrade": -2,
    "downgrades": -2,
    "plunge": -2,
    "layoffs": -2,
    "weak": -1,
    "cuts": -1,
    "delays": -1,
    "loss": -1,
    "falls": -1,
    "fine": -1,
    "resigns": -1,
}
"""Headline word → sentiment weight."""

NEGATIONS = frozenset({"no", "not", "never", "without"})
"""Words that flip the weight of the word right after them."""


@dataclass(frozen=True, slots=True)
class Bar:
    """One daily closing price."""

    day: date
    close: float


@dataclass(frozen=True, slots=True)
class Headline:
    """One dated news headline about a symbol."""

    day: date
    symbol: str
    text: str


@cache
def load_prices(path: Path = DATA_DIR / "prices.csv") -> tuple[Bar, ...]:
    """The bundled daily closes, oldest first."""
    with path.open(encoding="utf-8", newline="") as file:
        bars = tuple(
            Bar(date.fromisoformat(row["date"]), float(row["close"]))
            for row in csv.DictReader(file)
        )
    return tuple(sorted(bars, key=lambda b: b.day))


@cache
def load_headlines(path: Path = DATA_DIR / "headlines.json") -> tuple[Headline, ...]:
    """The bundled headlines, oldest first."""
    rows = json.loads(path.read_text(encoding="utf-8"))
    headlines = (
        Headline(date.fromisoformat(str(r["date"])), str(r["symbol"]), str(r["headline"]))
        for r in rows
    )
    return tuple(sorted(headlines, key=lambda h: h.day))


# --- technical analysis ------------------------------------------------------------


def sma(values: Sequence[float], period: int) -> float:
    """Simple moving average of the last ``period`` values."""
    if period < 1 or len(values) < period:
        raise ValueError(f"SMA({period}) needs at least {period} values, got {len(values)}")
    return statistics.fmean(values[-period:])


def rsi(values: Sequence[float], period: int = 14) -> float:
    """Wilder's relative strength index of the series, in [0, 100]."""
    if period < 1 or len(values) <= period:
        raise ValueError(f"RSI({period}) needs more than {period} values, got {len(values)}")
    changes = [b - a for a, b in itertools.pairwise(values)]
    gain = statistics.fmean(max(c, 0.0) for c in changes[:period])
    loss = statistics.fmean(max(-c, 0.0) for c in changes[:period])
    for change in changes[period:]:
        gain = (gain * (period - 1) + max(change, 0.0)) / period
        loss = (loss * (period - 1) + max(-change, 0.0)) / period
    if loss == 0:
        return 50.0 if gain == 0 else 100.0
    return 100.0 - 100.0 / (1.0 + gain / loss)


def daily_volatility(values: Sequence[float], window: int = 20) -> float:
    """Sample standard deviation of the last ``window`` daily log returns."""
    returns = [math.log(b / a) for a, b in itertools.pairwise(values)][-window:]
    if len(returns) < 2:
        raise ValueError("volatility needs at least three prices")
    return statistics.stdev(returns)


def _clamp(value: float, low: float = -1.0, high: float = 1.0) -> float:
    return max(low, min(high, value))


def technical_analysis(
    closes: Sequence[float], *, short: int = 5, long: int = 20, rsi_period: int = 14
) -> dict[str, Any]:
    """Moving averages, RSI and volatility of ``closes``, and a score in [-1, 1].

    The score is 70% trend (the gap between the short and the long SMA, a 3%
    gap counting fully) and 30% momentum (RSI around 50; overbought above 70
    and oversold below 30 count against and for the trade).
    """
    fast, slow = sma(closes, short), sma(closes, long)
    strength = rsi(closes, rsi_period)
    vol = daily_volatility(closes, long)
    gap = (fast - slow) / slow
    trend = _clamp(gap / 0.03)
    if strength > 70:
        momentum, zone = -0.5, "overbought"
    elif strength < 30:
        momentum, zone = 0.5, "oversold"
    else:
        momentum, zone = _clamp((strength - 50) / 40), "neutral"
    return {
        "last_close": closes[-1],
        "sma_short": round(fast, 4),
        "sma_long": round(slow, 4),
        "rsi": round(strength, 2),
        "periods": {"sma_short": short, "sma_long": long, "rsi": rsi_period},
        "rsi_zone": zone,
        "daily_volatility": round(vol, 6),
        "annualized_volatility": round(vol * math.sqrt(TRADING_DAYS), 4),
        "trend": "up" if fast > slow else "down" if fast < slow else "flat",
        "score": round(0.7 * trend + 0.3 * momentum, 4),
    }


# --- sentiment ---------------------------------------------------------------------


def score_headline(text: str) -> float:
    """Lexicon score of one headline in [-1, 1]; a negation flips the next word."""
    total = 0.0
    previous = ""
    for token in re.findall(r"[a-z]+", text.lower()):
        weight = LEXICON.get(token, 0.0)
        total += -weight if previous in NEGATIONS else weight
        previous = token
    return _clamp(total / 4)


def sentiment_analysis(
    headlines: Iterable[Headline], *, symbol: str, as_of: date, half_life_days: float = 14.0
) -> dict[str, Any]:
    """Recency-weighted mean headline score for ``symbol`` up to ``as_of``.

    A headline ``half_life_days`` old counts half as much as one from ``as_of``.
    """
    scored: list[dict[str, Any]] = []
    weighted = total_weight = 0.0
    for headline in headlines:
        if headline.symbol != symbol or headline.day > as_of:
            continue
        score = score_headline(headline.text)
        weight = 0.5 ** ((as_of - headline.day).days / half_life_days)
        weighted += weight * score
        total_weight += weight
        scored.append(
            {
                "date": headline.day.isoformat(),
                "headline": headline.text,
                "score": round(score, 3),
                "weight": round(weight, 3),
            }
        )
    score = weighted / total_weight if total_weight else 0.0
    label = "positive" if score >= 0.1 else "negative" if score <= -0.1 else "neutral"
    return {
        "symbol": symbol,
        "as_of": as_of.isoformat(),
        "score": round(score, 4),
        "label": label,
        "headline_count": len(scored),
        "headlines": scored,
    }


# --- risk and sizing ---------------------------------------------------------------


def assess_risk(
    technical: Mapping[str, Any],
    sentiment: Mapping[str, Any],
    *,
    technical_weight: float = 0.6,
    entry_threshold: float = 0.15,
    stop_multiple: float = 2.0,
    holding_days: int = 5,
) -> dict[str, Any]:
    """Combine the two analyses into a direction, a risk level and a stop price.

    The stop sits ``stop_multiple`` standard deviations of a ``holding_days``
    move away from the entry; higher volatility and disagreement between the
    analyses shrink the risk multiplier applied to the position size.
    """
    tech, sent = float(technical["score"]), float(sentiment["score"])
    signal = technical_weight * tech + (1.0 - technical_weight) * sent
    reasons: list[str] = []
    if signal >= entry_threshold:
        direction = "long"
    elif signal <= -entry_threshold:
        direction = "short"
    else:
        direction = "flat"
        reasons.append(f"signal {signal:+.3f} is inside ±{entry_threshold}")
    annual_vol = float(technical["annualized_volatility"])
    if annual_vol < 0.25:
        level, multiplier = "low", 1.0
    elif annual_vol < 0.45:
        level, multiplier = "medium", 0.6
    else:
        level, multiplier = "high", 0.3
    reasons.append(f"annualized volatility {annual_vol:.1%} is {level} risk")
    if tech * sent < 0 and min(abs(tech), abs(sent)) > 0.2:
        multiplier /= 2
        reasons.append("technical and sentiment signals disagree; size halved")
    entry = float(technical["last_close"])
    stop_pct = max(
        0.01, stop_multiple * float(technical["daily_volatility"]) * math.sqrt(holding_days)
    )
    stop = entry * (1 + stop_pct) if direction == "short" else entry * (1 - stop_pct)
    return {
        "direction": direction,
        "signal": round(signal, 4),
        "risk_level": level,
        "risk_multiplier": multiplier,
        "entry_price": entry,
        "stop_price": round(stop, 4),
        "stop_distance_pct": round(stop_pct, 6),
        "reasons": reasons,
    }


def size_position(
    risk: Mapping[str, Any],
    *,
    capital: float,
    risk_per_trade: float = 0.01,
    max_position_pct: float = 0.25,
) -> dict[str, Any]:
    """Fixed-fractional sizing: lose at most ``capital * risk_per_trade`` at the stop.

    The budget is scaled by the risk multiplier, and the position's value is
    capped at ``max_position_pct`` of capital. Whole shares only.
    """
    entry, stop = float(risk["entry_price"]), float(risk["stop_price"])
    budget = capital * risk_per_trade * float(risk["risk_multiplier"])
    per_share = abs(entry - stop)
    shares = 0
    capped_by = "flat signal"
    if risk["direction"] != "flat" and per_share > 0 and entry > 0:
        by_risk = math.floor(budget / per_share)
        by_value = math.floor(capital * max_position_pct / entry)
        shares = min(by_risk, by_value)
        capped_by = "risk budget" if by_risk <= by_value else "max position size"
    return {
        "direction": risk["direction"] if shares else "flat",
        "shares": shares,
        "entry_price": entry,
        "stop_price": stop,
        "notional": round(shares * entry, 2),
        "risk_budget": round(budget, 2),
        "max_loss": round(shares * per_share, 2),
        "capital": capital,
        "risk_per_trade": risk_per_trade,
        "capped_by": capped_by,
    }


def note_prompt(risk: Mapping[str, Any], sized: Mapping[str, Any], symbol: str) -> str:
    """What the model is asked for the desk note: the position and its reasons."""
    reasons = "; ".join(str(r) for r in risk.get("reasons", [])) or "none"
    return (
        f"Trade: {symbol} {sized['direction']}\n"
        f"Direction: {sized['direction']} (signal {risk['signal']:+.3f})\n"
        f"Shares: {sized['shares']} at {sized['entry_price']}, stop {sized['stop_price']}\n"
        f"Risk: {risk['risk_level']}; max loss {sized['max_loss']} of a "
        f"{sized['risk_budget']} budget; capped by {sized['capped_by']}\n"
        f"Reasons: {reasons}"
    )


# --- handlers ----------------------------------------------------------------------


def _symbol(ctx: TaskContext) -> str:
    symbol = ctx.input.get("symbol", SYMBOL)
    if not isinstance(symbol, str) or symbol.upper() != SYMBOL:
        raise NonRetryableError(f"no bundled market data for symbol {symbol!r}; use {SYMBOL!r}")
    return SYMBOL


def _number(value: Any, name: str, *, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise NonRetryableError(f"{name} must be a number, got {value!r}")
    if not low < value <= high:
        raise NonRetryableError(f"{name} must be > {low} and <= {high}, got {value!r}")
    return float(value)


def _int_param(ctx: TaskContext, name: str, default: int) -> int:
    value = ctx.params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise NonRetryableError(f"param {name!r} must be a positive integer, got {value!r}")
    return value


def _dependency(ctx: TaskContext, task_id: str) -> Mapping[str, Any]:
    result = ctx.inputs.get(task_id)
    if not isinstance(result, Mapping):
        raise NonRetryableError(
            f"task {ctx.task_id!r} needs the result of task {task_id!r}; "
            "check depends_on in the workflow"
        )
    return result


@app.agent(capabilities=["technical_analysis"])
async def technical_analyst(ctx: TaskContext) -> dict[str, Any]:
    """SMA, RSI and volatility of the bundled price series."""
    symbol = _symbol(ctx)
    bars = load_prices()
    short = _int_param(ctx, "sma_short", 5)
    long = _int_param(ctx, "sma_long", 20)
    try:
        result = technical_analysis(
            [b.close for b in bars],
            short=short,
            long=long,
            rsi_period=_int_param(ctx, "rsi_period", 14),
        )
    except ValueError as exc:
        raise NonRetryableError(f"not enough price history: {exc}") from exc
    return {"symbol": symbol, "as_of": bars[-1].day.isoformat(), **result}


@app.agent(capabilities=["sentiment_analysis"])
async def sentiment_analyst(ctx: TaskContext) -> dict[str, Any]:
    """Lexicon sentiment of the bundled headlines, weighted by recency."""
    symbol = _symbol(ctx)
    half_life = _number(ctx.params.get("half_life_days", 14.0), "half_life_days", low=0)
    as_of = load_prices()[-1].day
    return sentiment_analysis(
        load_headlines(), symbol=symbol, as_of=as_of, half_life_days=half_life
    )


@app.agent(capabilities=["risk_assessment"])
async def risk_manager(ctx: TaskContext) -> dict[str, Any]:
    """Combine technical and sentiment scores into a direction, risk level and stop."""
    weight = ctx.params.get("technical_weight", 0.6)
    return assess_risk(
        _dependency(ctx, "technical"),
        _dependency(ctx, "sentiment"),
        technical_weight=_number(weight, "technical_weight", low=0, high=1),
        entry_threshold=_number(ctx.params.get("entry_threshold", 0.15), "entry_threshold", low=0),
    )


@app.agent(capabilities=["position_sizing"])
async def position_sizer(ctx: TaskContext) -> dict[str, Any]:
    """Size the position by the fixed-fractional rule from ``input.capital``; a
    model writes the desk a note on it, streamed."""
    if "capital" not in ctx.input:
        raise NonRetryableError("input 'capital' is required (the account value to size against)")
    capital = _number(ctx.input["capital"], "input 'capital'", low=0)
    risk_per_trade = _number(
        ctx.input.get("risk_per_trade", 0.01), "input 'risk_per_trade'", low=0, high=0.1
    )
    max_pct = _number(ctx.params.get("max_position_pct", 0.25), "max_position_pct", low=0, high=1)
    risk = _dependency(ctx, "risk")
    sized = size_position(
        risk, capital=capital, risk_per_trade=risk_per_trade, max_position_pct=max_pct
    )
    if ctx.llm is None:
        raise NonRetryableError(f"agent {ctx.agent!r} runs without a model (ctx.llm)")
    note = await ctx.llm.complete(
        note_prompt(risk, sized, _symbol(ctx)), system=NOTE_INSTRUCTIONS, stream=True
    )
    return {"symbol": _symbol(ctx), **sized, "note": note}


__all__ = [
    "app",
    "assess_risk",
    "daily_volatility",
    "load_headlines",
    "load_prices",
    "note_prompt",
    "rsi",
    "score_headline",
    "sentiment_analysis",
    "size_position",
    "sma",
    "technical_analysis",
]
