"""Temporal workflow definitions. Deterministic: they import domain/ and call activities by reference."""
