"""The Kafka runtime: connectors produce canonical events to Kafka, Faust workers run the
engine (the same operators as the embedded runtime) and publish KPI samples, a gateway
process serves the API and the alerts from those samples."""
