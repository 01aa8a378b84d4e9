"""carescore engine: canonical events, KPI definitions, operators, windows, runtimes."""
