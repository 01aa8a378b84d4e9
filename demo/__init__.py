"""The demo hospital: simulated peers (an EMR over MLLP, back-office systems over the feed API)."""
