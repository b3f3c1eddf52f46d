"""gRPC server wrapping the styletx engine: streaming Stylize, health, reflection, metrics."""
