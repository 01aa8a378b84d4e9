"""Connectors: HL7 v2, FHIR R4 and feeds in, canonical events out."""

import engine  # noqa: F401  (first: serves the compiled HL7 v2 parser, engine/native.py)
