"""A request before any work: header-only inspection against the limits, option conversion
(proto <-> engine), and decoding an admitted request's images."""
