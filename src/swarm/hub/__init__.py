"""The self-hosted hub: an aiohttp server speaking Ensue's JSON-RPC ``tools/call`` protocol
over the embedded SQLite store, for private labs.

``serve_hub`` runs it inside an ``async with`` (tests, benchmarks); ``run_hub`` (and
``python -m swarm hub``) runs it until SIGTERM/SIGINT. Protocol: ``swarm.hub.protocol``;
tokens, roles and grants: ``swarm.hub.auth``.
"""

from __future__ import annotations

from swarm.hub.auth import HubPolicy
from swarm.hub.limits import HubLimits
from swarm.hub.server import HubHandle, build_app, run_hub, serve_hub, wait_for_hub
from swarm.hub.tokens import TokenStore

__all__ = [
    "HubHandle",
    "HubLimits",
    "HubPolicy",
    "TokenStore",
    "build_app",
    "run_hub",
    "serve_hub",
    "wait_for_hub",
]
