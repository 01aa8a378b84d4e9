"""HTTP surface: REST, /metrics, health, the scorecard page."""
