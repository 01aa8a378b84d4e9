"""Connectors: HL7 v2, FHIR R4 and feeds in, canonical events out."""
