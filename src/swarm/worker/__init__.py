"""One research worker per GPU: propose -> dedup -> claim -> run -> decide -> publish.

The public surface of the package; the parts live in small modules:

* :mod:`~swarm.worker.control` -- stop flags, the experiment budget, the counters, and
  :func:`~swarm.worker.control.unless_stopped` ("wait for X, or sleep, unless stopped");
* :mod:`~swarm.worker.deps` -- :class:`WorkerDeps`, what all workers of a supervisor share;
* :mod:`~swarm.worker.view` -- the swarm's recent results as proposers see them;
* :mod:`~swarm.worker.lineage` -- which best a worker builds on;
* :mod:`~swarm.worker.proposals` -- the proposal queue and its producer;
* :mod:`~swarm.worker.claims` -- claims, and claiming the next experiment ahead;
* :mod:`~swarm.worker.confirm` -- confirmation runs;
* :mod:`~swarm.worker.publish` -- the pure ``build_result``, the decision, the publication;
* :mod:`~swarm.worker.core` -- :class:`Worker`, the loop over them.
"""

from swarm.worker.control import CounterBox, Slots, StopControl, unless_stopped
from swarm.worker.core import Worker
from swarm.worker.deps import BASELINE_DESCRIPTION, SEED_ENV, RunFn, WorkerDeps
from swarm.worker.publish import ResultOrigin, build_result
from swarm.worker.view import SwarmView

__all__ = [
    "BASELINE_DESCRIPTION",
    "SEED_ENV",
    "CounterBox",
    "ResultOrigin",
    "RunFn",
    "Slots",
    "StopControl",
    "SwarmView",
    "Worker",
    "WorkerDeps",
    "build_result",
    "unless_stopped",
]
