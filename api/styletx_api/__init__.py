"""The styletx.v1 gRPC API for Python: the proto, its generated messages and stubs (`v1`), and
the option schema both the server and the SDK read requests and options with (`schema`).

One distribution, `styletx-api`, so that the server (`styletx-server`) and the SDK
(`styletx-client`) depend on the API, not on each other.
"""

__version__ = "0.1.0"
