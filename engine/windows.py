"""Event-time windows built from panes.

Every window kind is a run of consecutive panes: tumbling windows are one pane of `size`,
hopping and sliding windows are `size/step` panes of `step`, cumulative windows are every
pane since the first. Windows therefore end on pane boundaries, and a window closes when
the watermark passes its end plus the grace period. Operators keep per-pane partial
aggregates, so a late event inside grace corrects its pane and every open window over it.
"""

from __future__ import annotations

from engine.definitions import WindowSpec


class PaneClock:
    """Pane arithmetic for one window spec; pane i covers [i*pane, (i+1)*pane)."""

    __slots__ = ("cumulative", "grace", "k", "kind", "pane", "size")

    def __init__(self, spec: WindowSpec):
        self.kind = spec.kind
        self.pane = float(spec.hop)
        self.cumulative = spec.kind == "cumulative"
        self.k = 0 if self.cumulative else round(float(spec.size or 0) / self.pane)
        self.size = self.k * self.pane
        self.grace = float(spec.grace)

    def index(self, ts: float) -> int:
        return int(ts // self.pane)

    def start_of(self, end_index: int, first_index: int) -> int:
        """First pane of the window that ends (exclusive) at pane end_index."""
        return first_index if self.cumulative else end_index - self.k

    def closable(self, end_index: int, watermark: float) -> bool:
        return end_index * self.pane + self.grace <= watermark

    def live_end(self, watermark: float) -> int:
        """End (exclusive) of the open window that contains the watermark."""
        return self.index(watermark) + 1

    def keep_from(self, closed_upto: int) -> int:
        """Oldest pane still needed once windows ending at or before closed_upto are out."""
        return closed_upto + 1 - max(self.k, 1)
