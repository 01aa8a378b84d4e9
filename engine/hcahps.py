"""HCAHPS top-box scoring: a connector's answer -> the canonical answer and whether it is in
the item's top box; per-item counts -> a domain's and a KPI's top-box score.

Every patient-experience connector (the experience feed, FHIR QuestionnaireResponse) maps its
own codes to the canonical item ids and scores answers with `score()`, so an answer means the
same whatever sent it; the engine knows only the canonical ids (engine/operators/topbox.py).
The survey itself (items, domains, scales, with CMS sources) is engine/hcahps_survey.py; its
tables are importable from here too (ITEMS, DOMAINS, SCALES, Item).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from engine.hcahps_survey import DOMAINS, ITEM_BY_NUMBER, ITEMS, SCALES, Item, Scale

__all__ = [
    "DOMAINS",
    "ITEMS",
    "SCALES",
    "Item",
    "composite_score",
    "domain_score",
    "items_of",
    "lookup",
    "score",
]


# -- connectors: codes and answers -> canonical ---------------------------------------------------
def _norm(text: str) -> str:
    out = text.strip().lower().replace("'", "").replace("\u2019", "")
    for ch in " -/.,":
        out = out.replace(ch, "_")
    while "__" in out:
        out = out.replace("__", "_")
    return out.strip("_")


def lookup(code: str) -> Item | None:
    """A canonical item id (nurse_courtesy, nurse-courtesy) or a CMS question number of the
    2018-2024 survey (Q1, q1, 1) -> the item; anything else is not an HCAHPS item."""
    key = _norm(code)
    if key in ITEMS:
        return ITEMS[key]
    number = key[1:] if key.startswith("q") else key
    if number.isdigit():
        return ITEM_BY_NUMBER.get(int(number))
    return None


def score(item_id: str, raw: str | float | bool) -> tuple[str, bool | None]:
    """One answer on its item's own scale -> (canonical answer, top box).

    `raw` is the answer as worded ("Always", "Definitely yes", "Strongly agree", "Yes"), its
    CMS response code (1-4: Never..Always, Definitely no..Definitely yes, Strongly
    disagree..Strongly agree; 1 = Yes, 2 = No) or, for the overall rating, the number 0-10.
    Top box is None for screener items and for "does not apply" codes (Q4: 9, I never pressed
    the call button; Q22: 5, I was not given any medicine): neither is ever counted.
    Raises ValueError, naming the allowed answers, for anything else.
    """
    item = ITEMS[item_id]
    if item.scale is None:
        raise ValueError(f"{item_id} is an About You item: carescore does not store it")
    scale = SCALES[item.scale]
    label = _label(item, scale, raw)
    if label in item.not_applicable.values():
        return label, None
    return label, (label in scale.top if item.role == "scored" else None)


def _label(item: Item, scale: Scale, raw: str | float | bool) -> str:
    if isinstance(raw, bool):
        if scale.name == "yes_no":
            return "yes" if raw else "no"
        raise ValueError(f"{item.id}: a yes/no answer on the {scale.name} scale ({_allowed(item, scale)})")
    if isinstance(raw, int | float):
        number = float(raw)
        text = str(int(number)) if number.is_integer() else str(raw)
    else:
        stripped = raw.strip()
        try:
            number = float(stripped)
            text = str(int(number)) if number.is_integer() else stripped
        except ValueError:
            text = _norm(stripped)
            prefixed = re.fullmatch(r"(\d+)_(.+)", text)  # "4 Always", "10 Best hospital possible"
            if prefixed:
                label = scale.aliases.get(prefixed.group(2), prefixed.group(2))
                text = label if label in scale.options else prefixed.group(1)
    if scale.numeric:
        if text in scale.options:
            return text
    elif text.isdigit():
        code = int(text)
        if code in item.not_applicable:
            return item.not_applicable[code]
        if 1 <= code <= len(scale.options):
            return scale.options[code - 1]
    else:
        text = scale.aliases.get(text, text)
        if text in scale.options or text in item.not_applicable.values():
            return text
    raise ValueError(f"{item.id}: {raw!r} is not an answer on its scale ({_allowed(item, scale)})")


def _allowed(item: Item, scale: Scale) -> str:
    if scale.numeric:
        return "0 to 10"
    words = ", ".join(f"{i + 1} {o.replace('_', ' ')}" for i, o in enumerate(scale.options))
    extra = ", ".join(f"{c} {w.replace('_', ' ')}" for c, w in item.not_applicable.items())
    return words + (f"; {extra}" if extra else "")


# -- the engine: top-box scores from per-item counts ----------------------------------------------
def domain_score(counts: Mapping[str, Sequence[float]], domain: str) -> float | None:
    """A domain's top-box score (0-1): the mean of its items' top-box proportions, over the
    items that have answers. counts: item -> (top-box answers, answers)."""
    shares = []
    for item in DOMAINS[domain].items:
        tally = counts.get(item)
        if tally is not None and tally[1] > 0:
            shares.append(tally[0] / tally[1])
    return sum(shares) / len(shares) if shares else None


def composite_score(counts: Mapping[str, Sequence[float]], domains: Sequence[str]) -> float | None:
    """The mean of the domains' top-box scores (0-1), over the domains that have answers."""
    scores = [s for s in (domain_score(counts, d) for d in domains) if s is not None]
    return sum(scores) / len(scores) if scores else None


def items_of(domains: Sequence[str]) -> frozenset[str]:
    return frozenset(item for d in domains for item in DOMAINS[d].items)
