"""Moved to :mod:`swarm.testing` (the public home of the fake NVML); kept as an alias so
code written against the old path keeps importing. Import from ``swarm.testing``."""

from swarm.testing import FakeGpu, FakeNvml

__all__ = ["FakeGpu", "FakeNvml"]
