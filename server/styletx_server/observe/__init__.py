"""Observability every room uses: one-line JSON logs, the Prometheus metrics (each declared
once), OpenTelemetry tracing, and the wrapping of gRPC handlers that interceptors share."""
