"""A KPI's `window`: tumbling, hopping, sliding or cumulative, its size and step a duration
or whole calendar months, and the grace a late event is still counted in.

How panes map onto time (local days, months, DST) is engine/windows.py (PaneClock); this is
only the definition and its checks.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PlainSerializer, model_validator

from engine.definitions.match import Strict
from engine.durations import Duration, format_duration, parse_duration

_MONTHS = re.compile(r"(\d+)mo")


def parse_window_length(value: Any) -> float | str:
    """A window's size or step: a duration in seconds ('15m', '1h', '30d'), or whole calendar
    months, kept as written ('1mo', '3mo')."""
    if isinstance(value, str):
        match = _MONTHS.fullmatch(value.strip().replace(" ", ""))
        if match:
            months = int(match.group(1))
            if months < 1:
                raise ValueError("a window of calendar months needs at least '1mo'")
            return f"{months}mo"
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{exc}, or calendar months: '1mo', '3mo'") from None


def format_window_length(value: float | str) -> str:
    return value if isinstance(value, str) else format_duration(value)


WindowLength = Annotated[
    float | str,
    BeforeValidator(parse_window_length),
    PlainSerializer(format_window_length, return_type=str),
]
"""Seconds (a float), or calendar months (a string such as '3mo')."""


def months_of(length: float | str | None) -> int | None:
    """The number of calendar months of a window length, None for a duration."""
    return int(length[:-2]) if isinstance(length, str) else None


class WindowSpec(Strict):
    """Event-time windows, made of panes of `step` (tumbling: `size`).

    A step of whole days is a run of local days in the site's time zone (settings
    `timezone`): windows start and end at local midnight, and a day is 23 or 25 hours when
    the clocks change. A step of calendar months (`1mo`) starts at local midnight on the 1st.
    Shorter steps (minutes, hours) are counted from the UTC epoch. Grace is always a duration.
    """

    kind: Literal["tumbling", "hopping", "sliding", "cumulative"]
    size: WindowLength | None = Field(
        default=None,
        description="a duration ('60m', '30d'; whole days are local days) or calendar months ('1mo'); "
        "not used by cumulative",
    )
    step: WindowLength | None = Field(
        default=None,
        description="hop between closed windows (hopping, sliding; cumulative: how often it is "
        "reported); default size. Calendar months ('1mo') when size is in months",
    )
    grace: Duration = Field(default=300.0, description="how late an event may be and still count")

    @model_validator(mode="after")
    def _shape(self) -> WindowSpec:
        if self.kind != "cumulative" and not self.size:
            raise ValueError(f"a {self.kind} window needs a size, e.g. size: 60m")
        if self.kind == "hopping" and not self.step:
            raise ValueError("a hopping window needs a step, e.g. step: 15m")
        if self.kind == "cumulative" and not self.step:
            raise ValueError("a cumulative window needs a step: how often it is reported")
        if self.size and self.step and self.kind != "cumulative":
            if isinstance(self.size, str) != isinstance(self.step, str):
                raise ValueError(
                    "size and step must both be calendar months ('3mo', '1mo') or both durations "
                    "('30d', '1d')"
                )
            size, step = _amount(self.size), _amount(self.step)
            if step > size:
                raise ValueError("step must not be larger than size")
            ratio = size / step
            if abs(ratio - round(ratio)) > 1e-9:
                raise ValueError("size must be a whole multiple of step")
        return self

    @property
    def hop(self) -> float | str:
        """The pane: seconds, or calendar months ('1mo'), between consecutive closed windows."""
        if self.kind == "tumbling":
            return self.size  # type: ignore[return-value]
        return self.step or self.size  # type: ignore[return-value]

    @property
    def panes(self) -> int:
        """Panes per window (0: cumulative, every pane since the first)."""
        if self.kind == "cumulative":
            return 0
        return round(_amount(self.size) / _amount(self.hop))  # type: ignore[arg-type]


def _amount(length: float | str) -> float:
    months = months_of(length)
    return float(months) if months is not None else float(length)
