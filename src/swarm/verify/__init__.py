"""Checks that decide whether a run's result may be believed (see docs/DESIGN.md, "Trust").

Public surface: :func:`check_train_py` (the static check of a train.py before it runs).
"""

from swarm.verify.static import Finding, check_train_py

__all__ = ["Finding", "check_train_py"]
