"""OTLP push: every family the exporter serves on ``/metrics``, also pushed over OTLP/HTTP
(protobuf) to an OpenTelemetry collector or a vendor's endpoint. Off unless configured
(``settings``); the encoding (``encode``) needs the ``otlp`` extra (opentelemetry-proto)."""
