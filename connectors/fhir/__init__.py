"""FHIR R4: validation, resource and Bundle mapping, subscription notifications, bulk import."""
