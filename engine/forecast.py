"""Forecasts of a KPI from its closed windows, with prediction intervals.

The model is statsmodels' ETS (exponential smoothing state space, Hyndman et al. 2008):
simple (A,N,N), Holt's linear trend (A,A,N) and damped trend (A,Ad,N), the one with the
lowest AICc kept, with the analytic 80 % and 95 % intervals of the additive-error models.
Why statsmodels and not statsforecast: statsforecast depends on statsmodels anyway and adds
numba, llvmlite and fugue (README: Forecasts). Nothing here is a home-made model:
this module only turns history into a regular series and reads the fitted model.

A series is the KPI's closed windows at one place, one value per window end (the KPI's
step); a gap of up to MAX_GAP steps is bridged with the last value (the KPI did not move as
far as anyone can tell), a longer one cuts the series: only the stretch after it is used.
"""

from __future__ import annotations

import itertools
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.durations import Duration
from engine.samples import Sample

MIN_POINTS = 24
"""Fewest windows a forecast is made from: ETS with a damped trend fits 5 parameters, and
two hours of 5-minute windows is the least that shows a trend apart from noise."""
MAX_POINTS = 288
"""Most windows used (a day of 5-minute windows): older data says little about the next hours
and the fit's cost grows with it."""
MAX_GAP = 12
"""Windows without data bridged with the last value; a longer gap cuts the series."""
MAX_STEPS = 288
"""Longest horizon, in windows."""

MODELS: tuple[tuple[str, str | None, bool], ...] = (
    ("ETS(A,N,N)", None, False),
    ("ETS(A,A,N)", "add", False),
    ("ETS(A,Ad,N)", "add", True),
)


class TooShort(ValueError):
    """Not enough history for a forecast; `needed` and `have` say how much."""

    def __init__(self, needed: int, have: int, step: float | None):
        self.needed, self.have, self.step = needed, have, step
        span = f" ({needed * step / 3600:g} h of {step / 60:g}-minute windows)" if step else ""
        super().__init__(
            f"a forecast needs at least {needed} consecutive closed windows with data{span}; "
            f"this series has {have}"
        )


@dataclass(frozen=True)
class Point:
    at: datetime  # the end of the forecast window
    mean: float
    lower80: float
    upper80: float
    lower95: float
    upper95: float


@dataclass(frozen=True)
class Forecast:
    model: str
    step: float  # seconds between window ends
    history: int  # windows the model was fitted on
    last: datetime  # the end of the last window used
    last_value: float
    points: list[Point]


class ForecastSettings(BaseModel):
    """`forecasts:` in carescore.yaml: forecast alerts (the /forecast endpoint needs none)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    enabled: bool = Field(
        default=False,
        description="raise forecast alerts; off by default: the backtest (BENCHMARKS.md) did not show "
        "them beating a last-value alert",
    )
    horizon: Duration = Field(default=7200.0, description="how far ahead a breach is looked for")
    interval: Literal[80, 95] = Field(default=80, description="the prediction interval whose bound counts")
    level: Literal["warning", "critical"] = Field(default="critical", description="the threshold watched")
    severity: Literal["warning", "critical"] = Field(default="warning", description="the alert's own")
    for_: Duration = Field(default=600.0, alias="for", description="forecast to breach this long first")
    every: Duration = Field(default=300.0, description="how often the forecasts are made again")
    max_series: int = Field(default=200, ge=1, description="most KPI x place series forecast per pass")
    kpis: list[str] | None = Field(
        default=None, description="only these KPIs (default: every KPI with the threshold)"
    )


def series(samples: Sequence[Sample]) -> tuple[list[datetime], list[float], float | None]:
    """The regular series in closed windows (oldest first): window ends, values, step seconds."""
    points = sorted(
        ((s.window.end, s.value) for s in samples if s.value is not None and s.status != "no_data"),
        key=lambda p: p[0],
    )
    if len(points) < 2:
        return [p[0] for p in points], [float(p[1]) for p in points], None
    gaps = [(b[0] - a[0]).total_seconds() for a, b in itertools.pairwise(points)]
    step = statistics.median(g for g in gaps if g > 0) if any(g > 0 for g in gaps) else None
    if not step:
        return [], [], None
    times: list[datetime] = [points[-1][0]]
    values: list[float] = [float(points[-1][1])]
    for at, value in reversed(points[:-1]):  # back from the latest: stop at a long gap
        missing = round((times[0] - at).total_seconds() / step) - 1
        if missing > MAX_GAP or len(values) >= MAX_POINTS:
            break
        for k in range(missing, 0, -1):  # bridged with the last value before the gap
            times.insert(0, at + timedelta(seconds=step * k))
            values.insert(0, float(value))
        if missing >= 0:
            times.insert(0, at)
            values.insert(0, float(value))
    return times[-MAX_POINTS:], values[-MAX_POINTS:], step


def forecast(samples: Sequence[Sample], horizon: float) -> Forecast:
    """The next windows up to `horizon` seconds after the last closed window."""
    times, values, step = series(samples)
    if step is None or len(values) < MIN_POINTS:
        raise TooShort(MIN_POINTS, len(values), step)
    steps = max(1, min(MAX_STEPS, round(horizon / step)))
    return fit(values, steps, times[-1], step)


def fit(values: Sequence[float], steps: int, last: datetime, step: float) -> Forecast:
    """ETS forecast of `steps` values after `values` (a regular series ending at `last`)."""
    import pandas as pd  # statsmodels' results index by the series' index
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    y = pd.Series([float(v) for v in values])
    n = len(y)
    if max(values) == min(values):
        # no variance to estimate: every model says the same value with an interval of zero
        flat = float(values[-1])
        ahead = [last + timedelta(seconds=step * (i + 1)) for i in range(steps)]
        points = [Point(at, flat, flat, flat, flat, flat) for at in ahead]
        return Forecast("ETS(A,N,N)", step, n, last, flat, points)
    best = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence notes: the AICc comparison judges the fit
        for name, trend, damped in MODELS:
            try:
                result = ETSModel(y, error="add", trend=trend, damped_trend=damped).fit(disp=False)
            except (ValueError, np_errors()):
                continue
            if best is None or result.aicc < best[1].aicc:
                best = (name, result)
        if best is None:
            raise ValueError("no ETS model could be fitted to this series")
        name, result = best
        prediction = result.get_prediction(start=n, end=n + steps - 1)
        i80 = prediction.summary_frame(alpha=0.20)
        i95 = prediction.summary_frame(alpha=0.05)
    points = [
        Point(
            at=last + timedelta(seconds=step * (i + 1)),
            mean=float(i80["mean"].iloc[i]),
            lower80=float(i80["pi_lower"].iloc[i]),
            upper80=float(i80["pi_upper"].iloc[i]),
            lower95=float(i95["pi_lower"].iloc[i]),
            upper95=float(i95["pi_upper"].iloc[i]),
        )
        for i in range(steps)
    ]
    return Forecast(name, step, n, last, float(values[-1]), points)


def np_errors() -> type[Exception]:
    import numpy as np

    return np.linalg.LinAlgError


def first_breach(fc: Forecast, threshold: float, lower_is_better: bool, interval: int = 80) -> Point | None:
    """The first forecast window whose interval bound on the bad side is past the threshold
    (the upper bound when lower is better), or None."""
    for p in fc.points:
        if lower_is_better:
            bound = p.upper80 if interval == 80 else p.upper95
            if bound >= threshold:
                return p
        else:
            bound = p.lower80 if interval == 80 else p.lower95
            if bound <= threshold:
                return p
    return None
