"""Containment of every training run (see :mod:`swarm.sandbox._sandbox` for the mechanisms).

Public surface: :class:`Sandbox` (the mechanism in force and each run's launch),
:class:`SandboxLimits`, :func:`select_sandbox` (probe at start), :func:`allowed_env` (the
child's environment allow-list) and :func:`strip_userinfo`.
"""

from swarm.sandbox._cgroup import CgroupEvents, RunCgroup
from swarm.sandbox._env import allowed_env, strip_userinfo
from swarm.sandbox._layout import INSIDE
from swarm.sandbox._sandbox import (
    MECHANISMS,
    Launch,
    Mechanism,
    Sandbox,
    SandboxLimits,
    python_roots,
    select_sandbox,
)

__all__ = [
    "INSIDE",
    "MECHANISMS",
    "CgroupEvents",
    "Launch",
    "Mechanism",
    "RunCgroup",
    "Sandbox",
    "SandboxLimits",
    "allowed_env",
    "python_roots",
    "select_sandbox",
    "strip_userinfo",
]
