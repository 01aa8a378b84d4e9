"""HL7 v2: MLLP listener, parser, mapping to canonical events, acknowledgements."""
