"""Event bus: an in-process bus for embedded mode, Redis Streams in production."""
