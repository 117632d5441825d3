"""The parts of :mod:`swarm.dedup` (import from there; this package is private)."""
