"""The application: wires engine, connectors, alerts and api into one process (composition root)."""
