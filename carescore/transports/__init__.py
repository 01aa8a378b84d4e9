"""Two ways events reach the engine: the embedded log and Kafka, behind one shell."""
