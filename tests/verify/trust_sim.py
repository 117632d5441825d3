"""A swarm of agents on the synthetic trainer, some of them liars, over a real SQLite store.

Every agent is a :class:`SwarmMemory` client (its own name and host) of one LocalStore, and
the replication rules are the real :class:`CandidateBook`'s. Time goes in rounds of one
5-minute run per agent (all agents train in parallel): at the start of a round each agent
takes an open candidate to confirm if one is free (confirmation work first, one agent per
candidate), else it mutates one constant of the verified best (adopt = verified). Liars
report their own experiments better than measured by U(lie_lo, lie_hi) bpb (confirmations
of others' candidates they report honestly: lying there gains them nothing). Results are
applied at the end of the round. Used by tests/verify/test_trust_sim.py and
benchmarks/bench_trust.py.
"""

from __future__ import annotations

import hashlib
import importlib.util
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from swarm.memory.local import LocalStore
from swarm.namespace import SwarmMemory
from swarm.proposers.space import build_space
from swarm.records import Result
from swarm.verify.candidates import TrustPolicy
from swarm.verify.trust_records import Candidate

SYNTHETIC = Path(__file__).resolve().parents[1] / "fixtures" / "synthetic_train.py"
TRACK, TIER = "standard", "large"
RUN_S = 300.0


def load_synthetic() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_synthetic_for_trust_sim", SYNTHETIC)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class SimReport:
    """What happened: runs, candidates, verdicts, and the lies that got through."""

    agents: int
    experiments: int = 0
    confirmations: int = 0
    candidates: int = 0
    lie_candidates: int = 0
    lies_refuted: int = 0
    honest_refuted: int = 0
    lies_verified: int = 0
    lie_best_rounds: int = 0
    waits_s: list[float] = field(default_factory=list)
    best_true: float = 0.0
    sigma: float = 0.0

    @property
    def overhead(self) -> float:
        """Share of all runs spent on confirmations."""
        total = self.experiments + self.confirmations
        return self.confirmations / total if total else 0.0

    def summary(self) -> str:
        waits = sorted(self.waits_s)
        median = waits[len(waits) // 2] / 60 if waits else float("nan")
        worst = waits[-1] / 60 if waits else float("nan")
        return (
            f"agents {self.agents}, experiments {self.experiments}, confirmation runs "
            f"{self.confirmations} (overhead {100 * self.overhead:.1f} % of runs); "
            f"candidates {self.candidates} ({self.lie_candidates} lies): lies refuted "
            f"{self.lies_refuted}, lies verified {self.lies_verified}, rounds with a "
            f"lie as the best {self.lie_best_rounds}, honest refuted "
            f"{self.honest_refuted}; wait for verification median {median:.1f} min, "
            f"max {worst:.1f} min; best true val_bpb {self.best_true:.4f}; sigma "
            f"{self.sigma:.4f}"
        )


class _Sim:
    def __init__(
        self,
        store: LocalStore,
        n_agents: int,
        liar_share: float,
        seed: int,
        lie: tuple[float, float],
        policy: TrustPolicy,
    ) -> None:
        self.syn = load_synthetic()
        self.rng = random.Random(seed)
        self.now = 1_760_000_000.0
        self.policy = policy
        self.lie = lie
        n_liars = round(n_agents * liar_share)
        self.liars = {f"agent{i:02d}" for i in range(n_liars)}
        self.mems = [
            SwarmMemory(
                store,
                agent_id=f"agent{i:02d}",
                host=f"host{i:02d}",
                clock=lambda: self.now,
                embed_records=False,
            )
            for i in range(n_agents)
        ]
        self.consts: dict[str, dict[str, Any]] = {}  # code hash -> constants
        self.lies: dict[str, bool] = {}  # candidate key -> its author lied about it
        self.report = SimReport(agents=n_agents)
        self.born: dict[str, float] = {}  # candidate key -> when it was published
        self.ran: set[tuple[str, str]] = set()  # (parent, code) run so far (deduplication)

    def code_of(self, consts: dict[str, Any]) -> str:
        digest = hashlib.sha256(repr(sorted(consts.items())).encode()).hexdigest()
        self.consts.setdefault(digest, consts)
        return digest

    def measure(self, consts: dict[str, Any], seed: int) -> float | None:
        try:
            return float(self.syn.evaluate({**consts, "SEED": seed})["val_bpb"])
        except self.syn.SyntheticCrash:
            return None

    def result(
        self, mem: SwarmMemory, code: str, parent: str, val: float, seed: int, what: str
    ) -> Result:
        return Result(
            agent_id=mem.agent_id,
            host=mem.host,
            status="keep",
            description=what,
            train_py=f"# synthetic {code[:12]}\n",
            val_bpb=val,
            track=TRACK,
            vram_tier=TIER,
            parent_hash=parent,
            code_hash=code,
            seed=seed,
            completed_at=self.now,
        )

    async def parent(self, mem: SwarmMemory) -> tuple[str, dict[str, Any]]:
        best = await mem.get_best(TRACK, TIER)
        if best is None or best.code_hash not in self.consts:
            base = dict(self.syn.block_constants())
            return self.code_of(base), base
        return best.code_hash, self.consts[best.code_hash]

    def mutate(self, parent: str, consts: dict[str, Any]) -> dict[str, Any] | None:
        """A one-constant move of ``consts`` not run before from ``parent`` (None: none)."""
        dims = build_space(consts)
        for attempt in range(200):
            dim = self.rng.choice(dims)
            moved = dim.move(
                dim.get(consts[dim.name]),
                self.rng.choice((-1, 1)),
                self.rng.randrange(1 + attempt // 50),
            )
            if moved is None:
                continue
            child = {**consts, dim.name: dim.put(consts[dim.name], moved)}
            if (parent, self.code_of(child)) not in self.ran:
                return child
        return None

    async def round(self, budget: int) -> None:
        book = self.mems[0].candidates
        open_now = [c for c in await book.listing(TRACK, TIER) if c.open]
        taken: set[str] = set()
        plans: list[tuple[SwarmMemory, Candidate | None]] = []
        order = list(self.mems)
        self.rng.shuffle(order)
        for mem in order:
            pick = next(
                (
                    c
                    for c in open_now
                    if c.key not in taken
                    and c.original.agent_id != mem.agent_id
                    and all(r.agent_id != mem.agent_id for r in c.runs)
                ),
                None,
            )
            if pick is not None:
                taken.add(pick.key)
            elif budget <= 0:
                continue
            else:
                budget -= 1
            plans.append((mem, pick))
        self.now += RUN_S
        for mem, pick in plans:
            await (self.confirm(mem, pick) if pick else self.experiment(mem))

    async def confirm(self, mem: SwarmMemory, cand: Candidate) -> None:
        consts = self.consts[cand.result.code_hash]
        seed = max((r.seed or 0) for r in cand.runs) + 1 + self.rng.randrange(1000)
        val = self.measure(consts, seed)
        self.report.confirmations += 1
        if val is None:
            return
        run = self.result(
            mem, cand.result.code_hash, cand.result.parent_hash, val, seed, cand.result.description
        )
        decision = await mem.candidates.confirm(run, self.policy)
        lie = self.lies.get(cand.key, False)
        if decision.refuted:
            if lie:
                self.report.lies_refuted += 1
            else:
                self.report.honest_refuted += 1
        elif decision.moved or "confirmed" in decision.reason:
            self.report.waits_s.append(self.now - self.born.get(cand.key, self.now))
            if lie:
                self.report.lies_verified += 1

    async def experiment(self, mem: SwarmMemory) -> None:
        parent, consts = await self.parent(mem)
        child = self.mutate(parent, consts)  # never an experiment twice (dedup, claims)
        self.report.experiments += 1
        if child is None:
            return
        code = self.code_of(child)
        self.ran.add((parent, code))
        seed = 42
        val = self.measure(child, seed)
        if val is None:
            return
        liar = mem.agent_id in self.liars
        if liar:
            val -= self.rng.uniform(*self.lie)
        decision = await mem.candidates.propose(
            self.result(mem, code, parent, val, seed, f"mutation {code[:8]}"), self.policy
        )
        if decision.candidate:
            key = cand_key(parent, code)
            self.report.candidates += 1
            self.report.lie_candidates += liar
            self.lies[key] = liar
            self.born[key] = self.now


def cand_key(parent: str, code: str) -> str:
    return f"best/pending/{TRACK}/{TIER}/{parent[:12]}--{code[:12]}"


async def simulate(
    db: Path,
    *,
    agents: int = 50,
    experiments: int = 2000,
    liar_share: float = 0.1,
    seed: int = 0,
    lie: tuple[float, float] = (0.01, 0.3),
    policy: TrustPolicy | None = None,
) -> SimReport:
    """Run the swarm until ``experiments`` new experiments ran (confirmations come on top)."""
    policy = policy or TrustPolicy(allow_solo=False)
    async with LocalStore(db) as store:
        sim = _Sim(store, agents, liar_share, seed, lie, policy)
        while sim.report.experiments < experiments:
            await sim.round(experiments - sim.report.experiments)
            best = await sim.mems[0].get_best(TRACK, TIER)
            if best is not None and sim.lies.get(cand_key(best.result.parent_hash, best.code_hash)):
                sim.report.lie_best_rounds += 1
        for _ in range(3):  # let the last candidates be judged
            await sim.round(0)
        best = await sim.mems[0].get_best(TRACK, TIER)
        if best is not None:
            sim.report.best_true = float(
                sim.syn.evaluate(sim.consts[best.code_hash], noise=False)["val_bpb"]
            )
        noise = await sim.mems[0].candidates.noise(TRACK, TIER)
        sim.report.sigma = noise.sigma(min_pairs=policy.min_noise_pairs)
        return sim.report
