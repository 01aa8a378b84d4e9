"""The KPI catalogue: one YAML file per KPI (see docs/kpis.md). A package only so that an
installed carescore carries it."""
