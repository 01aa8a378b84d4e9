"""Alert service: evaluate KPI samples against thresholds, track episodes, deliver."""
