"""Checking and describing a free-form edit of train.py (shared by the llm and agent proposers).

Both proposers get a whole new train.py back (from a model's edits or from a coding
agent's scratch directory). :func:`validate_candidate` says why it cannot run as a child
of the current best (or None), and :func:`describe_candidate` names the change in the
swarm's ``PARAM old → new`` style when only constants changed.
"""

from __future__ import annotations

from typing import Any

from swarm.errors import TrainPyError
from swarm.proposers.base import ProposalContext
from swarm.proposers.space import check_values, describe_changes
from swarm.trainpy import apply_changes, code_hash, constants, constants_block, diff_constants

__all__ = ["describe_candidate", "validate_candidate"]


def validate_candidate(parent: str, candidate: str, ctx: ProposalContext) -> str | None:
    """Why ``candidate`` cannot be run as a child of ``parent`` on ctx's track, or None."""
    try:
        consts = constants(candidate)
    except TrainPyError as exc:
        return f"the edited train.py is broken: {exc}"
    try:
        compile(candidate, "train.py", "exec")
    except (SyntaxError, ValueError) as exc:
        return f"the edited train.py does not compile: {exc}"
    if code_hash(candidate) == code_hash(parent):
        return "the edits change nothing that matters (same code as the current best)"
    reason = check_values(consts, ctx.track_shape())
    if reason:
        return f"invalid constants: {reason}"
    return None


def describe_candidate(parent: str, candidate: str, fallback: str) -> tuple[str, dict[str, Any]]:
    """(description, constant changes) of ``candidate`` relative to ``parent``.

    The description is ``PARAM old → new, ...`` when the candidate differs from its parent
    in constants only; otherwise (code edits too, or train.py unreadable) it is
    ``fallback``, the proposer's own words. The changes map NAME -> (old, new) and are
    empty when the constants cannot be read.
    """
    try:
        diff = diff_constants(parent, candidate)
    except TrainPyError:
        return fallback, {}
    if not diff:
        return fallback, {}
    try:
        only_consts = code_hash(
            apply_changes(parent, {n: new for n, (old, new) in diff.items() if old is not None})
        ) == code_hash(candidate)
    except TrainPyError:
        only_consts = False
    if only_consts:
        sources = {c.name: c.source for c in constants_block(parent)}
        return describe_changes(diff, sources), dict(diff)
    return fallback, dict(diff)
