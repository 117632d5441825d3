"""The proposer interface: where the next experiment of a GPU comes from.

A proposer turns the current best ``train.py`` of a track and tier (plus whatever the
swarm already knows) into one candidate experiment, a :class:`Proposal`. The worker
deduplicates it, claims it, trains it and then calls :meth:`Proposer.observe` with the
published result so the proposer can learn from it.

Each implementation is a class with a ``name`` (its kind in the config), a ``slow`` flag
and a ``from_spec`` constructor (:class:`ProposerFactory`); the name table and
``build_proposer(spec)`` live in :mod:`swarm.proposers.registry`, so that this module
imports none of the implementations (they all import it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from swarm.errors import ConfigError
from swarm.tracks import TRACKS, TrackShape
from swarm.verify.plausible import base_profile

if TYPE_CHECKING:
    from swarm.namespace import SwarmMemory
    from swarm.records import Result
    from swarm.trainpy import Value

__all__ = [
    "PROPOSER_KINDS",
    "SEQ_LEN_BY_TRACK",
    "TRACK_SHAPES",
    "Proposal",
    "ProposalContext",
    "Proposer",
    "ProposerFactory",
    "ProposerKind",
    "ProposerSpec",
    "TrackShape",
    "is_slow",
]

ProposerKind = Literal["search", "hypotheses", "llm", "agent"]
PROPOSER_KINDS: tuple[str, ...] = ("search", "hypotheses", "llm", "agent")

#: Per track, how train.py scales the block (from the track table, swarm.tracks).
TRACK_SHAPES: dict[str, TrackShape] = {name: t.shape for name, t in TRACKS.items()}

#: Sequence length (tokens per row) of each track.
SEQ_LEN_BY_TRACK: dict[str, int] = {name: t.seq_len for name, t in TRACK_SHAPES.items()}


@dataclass(frozen=True, slots=True)
class Proposal:
    """One candidate experiment: the full train.py and what it changes, and why."""

    train_py: str
    description: str
    parent_hash: str
    proposer: str
    rationale: str = ""
    #: constants it changes: NAME -> (old, new) (empty for free-form code edits)
    changes: Mapping[str, tuple[Value, Value]] = field(default_factory=dict)
    #: text of an insight to publish with the result (optional)
    insight: str | None = None
    #: a follow-up idea to publish as a hypothesis with the result (optional)
    hypothesis: str | None = None
    #: key of the swarm hypothesis this proposal tests (the hypotheses proposer)
    hypothesis_key: str | None = None


@dataclass(frozen=True, slots=True)
class ProposalContext:
    """Everything a proposer may look at to make one proposal."""

    best_train_py: str
    parent_hash: str
    track: str
    tier: str
    agent_id: str
    worker_index: int = 0
    memory: SwarmMemory | None = None
    #: the swarm's results of the same track and tier (any order; newest first preferred)
    history: Sequence[Result] = ()
    #: (description, train_py) -> already run or claimed by the swarm?
    is_duplicate: Callable[[str, str], bool] | None = None
    seed: int = 0
    #: val_bpb of best_train_py on this track and tier, when known
    best_val_bpb: float | None = None
    #: how train.py scales the block on this track; None -> TRACK_SHAPES[track]
    shape: TrackShape | None = None
    #: claims this machine lost to other agents lately (each loss adds one, each claim won
    #: halves it): other agents propose the same experiments first, so a proposer may
    #: spread out
    contention: int = 0

    def track_shape(self) -> TrackShape:
        """The track's shape (for the batch divisibility and model dim rules)."""
        if self.shape is not None:
            return self.shape
        return TRACK_SHAPES.get(base_profile(self.track), TRACK_SHAPES["standard"])

    def sequence_length(self) -> int:
        """Tokens per row on this context's track."""
        return self.track_shape().seq_len

    def duplicate(self, description: str, train_py: str) -> bool:
        """``is_duplicate`` if given, else False."""
        return bool(self.is_duplicate and self.is_duplicate(description, train_py))


@runtime_checkable
class Proposer(Protocol):
    """A source of experiments. ``propose`` raises ``ProposerError`` when it cannot."""

    name: str

    async def propose(self, ctx: ProposalContext) -> Proposal: ...

    async def observe(self, proposal: Proposal, result: Result) -> None: ...


def is_slow(proposer: Proposer) -> bool:
    """Whether ``proposer`` waits on something outside this process (a model, an agent).

    A slow proposer proposes ahead of the GPU and outside the machine-wide propose lock;
    a fast one (in-process CPU work) takes the lock. Read from the proposer's ``slow``
    attribute; a proposer that does not declare one counts as slow (the safe side: it
    never holds the lock while it waits)."""
    return bool(getattr(proposer, "slow", True))


class ProposerFactory(Protocol):
    """A proposer class as the registry knows it: its kind, its speed, how it is built."""

    name: str
    slow: bool

    @classmethod
    def from_spec(cls, spec: ProposerSpec, **options: Any) -> Proposer:
        """The proposer ``spec`` configures; ``options`` are test hooks only the llm kind takes."""
        ...


@dataclass(frozen=True, slots=True)
class ProposerSpec:
    """Configuration of one worker's proposer (from the config file or the CLI)."""

    kind: str = "search"
    llm_url: str | None = None
    llm_model: str | None = None
    llm_key_env: str = "OPENAI_API_KEY"
    llm_timeout_s: float = 120.0
    llm_max_prompt_tokens: int = 12_000
    agent_cmd: str | None = None
    agent_timeout_s: float = 900.0
    #: names of environment variables passed through to the agent command
    agent_env: tuple[str, ...] = ()
    #: kind to fall back to after ``fallback_after`` consecutive failures (None: no fallback)
    fallback: str | None = "search"
    fallback_after: int = 3
    temperature: float = 0.7
    seed: int = 0
    #: collab.md to give LLMs and agents (None: the one shipped at the repo root, if found)
    collab_path: str | None = None
    #: prepare.py copied read-only into the agent's scratch dir (None: the repo's, if found)
    prepare_path: str | None = None
    #: where the agent proposer makes scratch directories (None: the system temp dir)
    scratch_root: str | None = None
    #: probability of an exploration step of the search proposer
    explore: float = 0.1

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the bad key."""
        if self.kind not in PROPOSER_KINDS:
            raise ConfigError(
                f"proposer kind {self.kind!r} is unknown; use one of {', '.join(PROPOSER_KINDS)}",
                key="proposer",
                value=self.kind,
            )
        if self.fallback is not None and self.fallback not in PROPOSER_KINDS:
            raise ConfigError(
                f"fallback proposer {self.fallback!r} is unknown; use one of "
                f"{', '.join(PROPOSER_KINDS)} or none",
                key="fallback",
                value=self.fallback,
            )
        if self.fallback_after < 1:
            raise ConfigError(
                "fallback_after must be >= 1", key="fallback_after", value=self.fallback_after
            )
        for kind in {self.kind, self.fallback} - {None}:
            if kind == "llm" and not self.llm_url:
                raise ConfigError(
                    "the llm proposer needs --llm-url (e.g. http://HOST:PORT/v1)",
                    key="llm_url",
                    value=self.llm_url,
                )
            if kind == "llm" and not self.llm_model:
                raise ConfigError(
                    "the llm proposer needs --llm-model NAME", key="llm_model", value=self.llm_model
                )
            if kind == "agent" and not self.agent_cmd:
                raise ConfigError(
                    "the agent proposer needs --agent-cmd TEMPLATE "
                    "(e.g. 'claude -p \"$(cat {prompt_file})\"')",
                    key="agent_cmd",
                    value=self.agent_cmd,
                )
        if self.agent_timeout_s <= 0:
            raise ConfigError(
                "agent_timeout_s must be > 0", key="agent_timeout_s", value=self.agent_timeout_s
            )
        if self.llm_timeout_s <= 0:
            raise ConfigError(
                "llm_timeout_s must be > 0", key="llm_timeout_s", value=self.llm_timeout_s
            )
        if not 0.0 <= self.explore <= 1.0:
            raise ConfigError("explore must be within [0, 1]", key="explore", value=self.explore)
