"""The styletx.v1 gRPC API for Python: the proto, its generated messages and stubs (`v1`), the
option schema both the server and the SDK read requests and options with (`schema`), and the
names both put on the wire beside the messages: ErrorInfo domain, metadata keys (`wire`).

One distribution, `styletx-api`, so that the server (`styletx-server`) and the SDK
(`styletx-client`) depend on the API, not on each other.
"""

__version__ = "0.1.0"
