"""The parts of :mod:`swarm.ensue_async` (import from there; this package is private)."""
