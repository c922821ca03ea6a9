"""Temporal activities: thin adapters from workflow calls to drivers, probes, the store and the bus."""
