"""The Deduplicator (section 1): layers, lineage, live claims, vectors, errors, async use."""

from __future__ import annotations

import asyncio
import itertools
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from swarm.dedup import DEFAULT_SEMANTIC_THRESHOLD, Candidate, Deduplicator, code_diff_summary
from swarm.errors import DedupError, TrainPyError
from swarm.trainpy import apply_changes, code_hash


class CountingEmbedder:
    """The real embedder, counting the texts it is asked for (to test vector reuse)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.texts: list[str] = []

    def embed(self, texts):
        self.texts.extend(texts)
        return self.inner.embed(texts)


class ExplodingEmbedder:
    """An embedder that must never be used."""

    def embed(self, texts):
        raise AssertionError(f"the embedder was called with {list(texts)[:2]}")


MLP_FWD = "F.relu(self.c_fc(x)).square()"
SILU_A = "F.silu(self.c_fc(x))"
OPT_STEP = "    for opt in optimizers:\n        opt.step()"


def silu_b(src: str) -> str:
    return src.replace(
        "        return self.c_proj(F.relu(self.c_fc(x)).square())",
        "        h = self.c_fc(x)\n        return self.c_proj(h * torch.sigmoid(h))",
    )


def clip(src: str, value: str) -> str:
    return src.replace(
        OPT_STEP, f"    torch.nn.utils.clip_grad_norm_(model.parameters(), {value})\n{OPT_STEP}"
    )


@pytest.fixture
def dd(train_py: str) -> Deduplicator:
    """A deduplicator that knows train.py (as a result without parent); code layers only."""
    d = Deduplicator(ExplodingEmbedder(), use_semantic=False)
    d.add(Candidate("baseline", train_py), "results/baseline")
    return d


def child(parent: str, desc: str = "", **changes) -> Candidate:
    return Candidate(desc, apply_changes(parent, changes), parent_train_py=parent)


# ----------------------------------------------------------------------------- exact


def test_exact_duplicate_despite_words_and_formatting(dd: Deduplicator, train_py: str) -> None:
    """The same code (reformatted, recommented, reworded) is an exact duplicate of any parent."""
    dd.add(child(train_py, "LR 0.04 -> 0.05", MATRIX_LR=0.05), "results/a")
    src = apply_changes(train_py, {"MATRIX_LR": 0.05}).replace(
        "MATRIX_LR = 0.05", "MATRIX_LR = 5e-2"
    )
    src = src.replace("# Muon learning rate", "# higher Muon learning rate")
    other_parent = apply_changes(train_py, {"MATRIX_LR": 0.03})
    v = dd.check(
        Candidate(
            "increase matrix learning rate from 0.03 to 0.05", src, parent_train_py=other_parent
        )
    )
    assert (v.duplicate, v.layer, v.match_key, v.score) == (True, "exact", "results/a", 1.0)
    assert v.changes == (("MATRIX_LR", 0.03, 0.05),)


def test_live_claims_count_and_release(dd: Deduplicator, train_py: str) -> None:
    """A live claim blocks its code; removing it (released) frees the experiment."""
    cand = child(train_py, "warmdown 0.5 to 0.7", WARMDOWN_RATIO=0.7)
    dd.add(cand, "claims/agent-a--warmdown--abc123", live=True)
    v = dd.check(child(train_py, "WARMDOWN_RATIO 0.5 → 0.7", WARMDOWN_RATIO=0.7))
    assert v.duplicate and v.layer == "exact" and v.match_key == "claims/agent-a--warmdown--abc123"
    assert dd.remove("claims/agent-a--warmdown--abc123")
    assert not dd.remove("claims/agent-a--warmdown--abc123")
    assert not dd.check(cand).duplicate
    assert dd.stats()["live"] == 0


def test_live_claim_preferred_as_match(dd: Deduplicator, train_py: str) -> None:
    """When a result and a live claim share the code, the claim is named."""
    cand = child(train_py, "depth 9", DEPTH=9)
    dd.add(cand, "results/depth9")
    dd.add(cand, "claims/depth9", live=True)
    assert dd.check(cand).match_key == "claims/depth9"


def test_add_code_registers_identity_only(train_py: str) -> None:
    """A claim known only by its code hash blocks exactly that code."""
    d = Deduplicator(ExplodingEmbedder(), use_semantic=False)
    cand = child(train_py, "depth 9", DEPTH=9)
    d.add_code("claims/other", code_hash(cand.train_py), description="depth 9", live=True)
    assert d.check(cand).match_key == "claims/other"
    assert not d.check(child(train_py, "depth 10", DEPTH=10)).duplicate
    with pytest.raises(DedupError, match="64 hex"):
        d.add_code("claims/x", "abc")


# ----------------------------------------------------------------------------- noop


def test_noop_identical_to_parent(dd: Deduplicator, train_py: str) -> None:
    """A candidate that sets a constant to its current value is a no-op, not a new experiment."""
    v = dd.check(child(train_py, "MATRIX_LR 0.04 -> 0.04", MATRIX_LR=0.04))
    assert (v.duplicate, v.layer, v.match_key) == (True, "noop", None)
    assert "identical to its parent" in v.reason


def test_noop_values_written_differently(dd: Deduplicator, train_py: str) -> None:
    """15 instead of 15.0 differs in code but changes nothing: a no-op."""
    v = dd.check(
        Candidate(
            "softcap 15.0 -> 15",
            train_py.replace("LOGIT_SOFTCAP = 15.0", "LOGIT_SOFTCAP = 15"),
            parent_train_py=train_py,
        )
    )
    assert v.layer == "noop" and "how values are written" in v.reason


def test_noop_reason_names_the_claimed_change(dd: Deduplicator, train_py: str) -> None:
    """When the description claims a change the code does not make, the reason says so."""
    v = dd.check(Candidate("set warmdown to 0.5", train_py, parent_train_py=train_py))
    assert v.layer == "noop" and "WARMDOWN_RATIO" in v.reason and "already 0.5" in v.reason


def test_noop_from_description_without_parent(train_py: str) -> None:
    """Without a parent, a description that only restates values (a -> a) is a no-op."""
    d = Deduplicator(ExplodingEmbedder(), use_semantic=False)
    v = d.check(Candidate("WARMDOWN_RATIO 0.5 → 0.5", train_py))
    assert v.layer == "noop"
    assert not d.check(Candidate("WARMDOWN_RATIO 0.5 → 0.7", train_py)).duplicate


# ----------------------------------------------------------------------------- structure


def test_near_values_not_confused(train_py: str, embedder) -> None:
    """0.04 -> 0.045 is not 0.04 -> 0.05, even with the semantic layer and near-identical words."""
    d = Deduplicator(embedder)
    d.add(child(train_py, "matrix LR 0.04 to 0.05", MATRIX_LR=0.05), "results/a")
    v = d.check(child(train_py, "matrix LR 0.04 to 0.045", MATRIX_LR=0.045))
    assert not v.duplicate and v.layer is None
    assert v.changes == (("MATRIX_LR", 0.04, 0.045),)


def test_same_change_from_sibling_parents_not_confused(dd: Deduplicator, train_py: str) -> None:
    """The same change from two different (non-ancestor) parents is two experiments."""
    p1 = apply_changes(train_py, {"WARMDOWN_RATIO": 0.7})
    p2 = apply_changes(train_py, {"DEPTH": 9})
    dd.add(child(train_py, "warmdown", WARMDOWN_RATIO=0.7), "results/p1")
    dd.add(child(train_py, "depth", DEPTH=9), "results/p2")
    dd.add(child(p1, "MATRIX_LR 0.04 -> 0.05", MATRIX_LR=0.05), "results/a")
    v = dd.check(child(p2, "MATRIX_LR 0.04 -> 0.05", MATRIX_LR=0.05))
    assert not v.duplicate


def test_structural_via_ancestor(dd: Deduplicator, train_py: str) -> None:
    """A change already tried from an ancestor, touched constants unchanged since: duplicate."""
    p1 = apply_changes(train_py, {"WARMDOWN_RATIO": 0.7})
    p2 = apply_changes(p1, {"TOTAL_BATCH_SIZE": 2**18})
    dd.add(child(train_py, "warmdown", WARMDOWN_RATIO=0.7), "results/p1")
    dd.add(Candidate("batch", p2, parent_train_py=p1), "results/p2")
    dd.add(child(train_py, "LR 0.04 -> 0.05", MATRIX_LR=0.05), "results/lr")
    v = dd.check(child(p2, "increase matrix LR to 0.05", MATRIX_LR=0.05))
    assert (v.duplicate, v.layer, v.match_key) == (True, "structural", "results/lr")
    assert "2 generations up" in v.reason
    # the same change from the parent itself is structural too (generation 0)
    dd.add(child(p2, "MATRIX_LR 0.04 -> 0.06", MATRIX_LR=0.06), "results/lr6")
    v = dd.check(
        Candidate(
            "again",
            apply_changes(p2, {"MATRIX_LR": 0.06}).replace("MATRIX_LR = 0.06", "MATRIX_LR = 0.060"),
            parent_train_py=p2,
        )
    )
    assert v.layer == "exact"  # same normalised code: the exact layer fires first


def test_ancestor_with_moved_value_is_not_a_duplicate(dd: Deduplicator, train_py: str) -> None:
    """If the touched constant changed between ancestor and parent, the change is new."""
    p1 = apply_changes(train_py, {"MATRIX_LR": 0.03, "SCALAR_LR": 0.3})
    dd.add(Candidate("lr 0.03", p1, parent_train_py=train_py), "results/p1")
    dd.add(child(train_py, "LR 0.04 -> 0.05", MATRIX_LR=0.05), "results/lr")
    v = dd.check(child(p1, "LR 0.03 -> 0.05", MATRIX_LR=0.05))
    assert not v.duplicate and v.changes == (("MATRIX_LR", 0.03, 0.05),)


def test_ancestor_depth_limits_the_walk(train_py: str) -> None:
    """ancestor_depth=0 compares with the parent's own children only."""
    d = Deduplicator(ExplodingEmbedder(), use_semantic=False, ancestor_depth=0)
    p1 = apply_changes(train_py, {"WARMDOWN_RATIO": 0.7})
    d.add(Candidate("base", train_py), "results/base")
    d.add(child(train_py, "warmdown", WARMDOWN_RATIO=0.7), "results/p1")
    d.add(child(train_py, "LR", MATRIX_LR=0.05), "results/lr")
    assert not d.check(child(p1, "LR", MATRIX_LR=0.05)).duplicate


def test_multi_change_order_and_subsets(dd: Deduplicator, train_py: str) -> None:
    """A multi-change proposal matches in any order; a subset or superset does not."""
    dd.add(
        child(
            train_py,
            "MATRIX_LR 0.04->0.05, WARMDOWN_RATIO 0.5->0.7",
            MATRIX_LR=0.05,
            WARMDOWN_RATIO=0.7,
        ),
        "results/multi",
    )
    v = dd.check(
        child(
            train_py,
            "warmdown 0.5 to 0.7 + matrix LR 0.04 to 0.05",
            WARMDOWN_RATIO=0.7,
            MATRIX_LR=0.05,
        )
    )
    assert v.duplicate and v.match_key == "results/multi"
    assert not dd.check(child(train_py, "MATRIX_LR 0.04->0.05", MATRIX_LR=0.05)).duplicate
    assert not dd.check(
        child(train_py, "three", MATRIX_LR=0.05, WARMDOWN_RATIO=0.7, DEPTH=9)
    ).duplicate


def test_parent_found_by_hash(train_py: str) -> None:
    """A candidate with only parent_hash is analysed against the known parent's source."""
    d = Deduplicator(ExplodingEmbedder(), use_semantic=False)
    p1 = apply_changes(train_py, {"DEPTH": 9})
    d.add(Candidate("base", train_py), "results/base")
    d.add(Candidate("depth 9", p1, parent_hash=code_hash(train_py)), "results/p1")
    d.add(child(train_py, "LR", MATRIX_LR=0.05), "results/lr")
    v = d.check(Candidate("LR", apply_changes(p1, {"MATRIX_LR": 0.05}), parent_hash=code_hash(p1)))
    assert v.layer == "structural" and v.changes == (("MATRIX_LR", 0.04, 0.05),)
    assert d.source_of(code_hash(p1)) == p1


def test_children_added_before_their_parent(train_py: str) -> None:
    """Loading newest first: a child known before its parent gets its change once the parent
    arrives, so the ancestor walk finds it."""
    d = Deduplicator(ExplodingEmbedder(), use_semantic=False)
    p1 = apply_changes(train_py, {"DEPTH": 9})
    lr = apply_changes(train_py, {"MATRIX_LR": 0.05})
    d.add(Candidate("LR", lr, parent_hash=code_hash(train_py)), "results/lr")
    d.add(Candidate("depth 9", p1, parent_hash=code_hash(train_py)), "results/p1")
    assert d.stats()["orphans"] == 2
    d.add(Candidate("base", train_py), "results/base")
    assert d.stats()["orphans"] == 0
    v = d.check(Candidate("LR", apply_changes(p1, {"MATRIX_LR": 0.05}), parent_hash=code_hash(p1)))
    assert v.layer == "structural" and v.match_key == "results/lr"


def test_unknown_parent_still_catches_exact(train_py: str) -> None:
    """Without any parent information the exact layer still works and the reason says so."""
    d = Deduplicator(ExplodingEmbedder(), use_semantic=False)
    cand = Candidate("depth 9", apply_changes(train_py, {"DEPTH": 9}), parent_hash="f" * 64)
    d.add(cand, "results/d9")
    assert d.check(cand).layer == "exact"
    v = d.check(Candidate("depth 10", apply_changes(train_py, {"DEPTH": 10}), parent_hash="f" * 64))
    assert not v.duplicate and "unknown" in v.reason


def test_layers_can_be_switched_off(train_py: str) -> None:
    """A deduplicator built with some layers never reports the others."""
    d = Deduplicator(ExplodingEmbedder(), use_semantic=False, layers=["structural"])
    cand = child(train_py, "depth", DEPTH=9)
    d.add(cand, "results/d9")
    assert d.check(cand).layer == "structural"  # same change from the same parent
    assert not d.check(child(train_py, "noop", DEPTH=8)).duplicate


# ----------------------------------------------------------------------------- semantic


@pytest.fixture
def sem(train_py: str, embedder) -> tuple[Deduplicator, CountingEmbedder]:
    counting = CountingEmbedder(embedder)
    d = Deduplicator(counting)
    d.add(Candidate("baseline", train_py), "results/baseline")
    d.add(
        Candidate(
            "switch MLP activation to SiLU",
            train_py.replace(MLP_FWD, SILU_A),
            parent_train_py=train_py,
        ),
        "results/silu",
    )
    d.add(
        Candidate(
            "gradient clipping max_norm=1.0", clip(train_py, "1.0"), parent_train_py=train_py
        ),
        "results/clip",
    )
    return d, counting


def test_semantic_catches_another_implementation(sem, train_py: str) -> None:
    """The same idea in other code and other words is a semantic duplicate (real model)."""
    d, _ = sem
    v = d.check(
        Candidate(
            "SiLU (x * sigmoid(x)) in the MLP instead of ReLU squared",
            silu_b(train_py),
            parent_train_py=train_py,
        )
    )
    assert (v.duplicate, v.layer, v.match_key) == (True, "semantic", "results/silu")
    assert DEFAULT_SEMANTIC_THRESHOLD <= v.score < 1.0


def test_semantic_keeps_other_choices_apart(sem, train_py: str) -> None:
    """Another activation, or another clipping value, is a new experiment however alike the words."""
    d, _ = sem
    relu = train_py.replace(MLP_FWD, "F.relu(self.c_fc(x))")
    v = d.check(
        Candidate("plain ReLU instead of ReLU^2 activation", relu, parent_train_py=train_py)
    )
    assert not v.duplicate
    v = d.check(
        Candidate("gradient clipping max_norm=0.5", clip(train_py, "0.5"), parent_train_py=train_py)
    )
    assert not v.duplicate and "other choice" in v.reason


def test_semantic_needs_same_parent_and_constants(sem, train_py: str) -> None:
    """The SiLU edit with a constant change, or from another parent, is not the known SiLU run."""
    d, _ = sem
    plus = apply_changes(silu_b(train_py), {"MATRIX_LR": 0.05})
    assert not d.check(Candidate("SiLU + matrix LR 0.05", plus, parent_train_py=train_py)).duplicate
    p1 = apply_changes(train_py, {"DEPTH": 9})
    assert not d.check(
        Candidate("switch MLP activation to SiLU", silu_b(p1), parent_train_py=p1)
    ).duplicate


def test_vectors_of_known_records_are_kept(sem, train_py: str) -> None:
    """Known records are embedded once (in one batch); each later check embeds one text."""
    d, counting = sem
    d.check(
        Candidate("swap the MLP nonlinearity for SiLU", silu_b(train_py), parent_train_py=train_py)
    )
    first = len(counting.texts)
    assert first >= 2  # the pending known rows plus the candidate
    for i in range(3):
        d.check(
            Candidate(
                f"SiLU variant {i}",
                silu_b(train_py).replace("torch.sigmoid(h)", f"torch.sigmoid(h * {i + 1})"),
                parent_train_py=train_py,
            )
        )
    assert len(counting.texts) == first + 3
    assert d.stats()["pending_vectors"] <= 1  # only the parentless baseline's own group


def test_constant_changes_never_load_the_model(train_py: str) -> None:
    """Constant-only candidates are decided by structure: the embedder is never called."""
    d = Deduplicator(ExplodingEmbedder())
    d.add(Candidate("base", train_py), "results/base")
    d.add(child(train_py, "matrix LR 0.04 to 0.05", MATRIX_LR=0.05), "results/a")
    assert not d.check(child(train_py, "matrix LR 0.04 to 0.045", MATRIX_LR=0.045)).duplicate


def test_semantic_window_limits_results(train_py: str, embedder) -> None:
    """Only the latest semantic_window results of a group are compared (claims always)."""
    d = Deduplicator(embedder, semantic_window=1)
    d.add(
        Candidate(
            "switch MLP activation to SiLU",
            train_py.replace(MLP_FWD, SILU_A),
            parent_train_py=train_py,
        ),
        "results/silu",
    )
    d.add(
        Candidate(
            "remove QK-norm",
            train_py.replace(
                "q, k = norm(rotate(q, cos, sin)), norm(rotate(k, cos, sin))",
                "q, k = rotate(q, cos, sin), rotate(k, cos, sin)",
            ),
            parent_train_py=train_py,
        ),
        "results/qk",
    )
    cand = Candidate(
        "SiLU (x * sigmoid(x)) in the MLP instead of ReLU squared",
        silu_b(train_py),
        parent_train_py=train_py,
    )
    assert not d.check(cand).duplicate  # results/silu fell out of the window
    d.add(
        Candidate(
            "switch MLP activation to SiLU",
            train_py.replace(MLP_FWD, SILU_A),
            parent_train_py=train_py,
        ),
        "claims/silu",
        live=True,
    )
    assert d.check(cand).match_key == "claims/silu"


def test_code_diff_summary(train_py: str) -> None:
    """The summary lists removed and added code lines, not the constants block."""
    s = code_diff_summary(train_py, apply_changes(train_py, {"DEPTH": 9}).replace(MLP_FWD, SILU_A))
    assert s.startswith("- return self.c_proj(F.relu") and "+ return self.c_proj(F.silu" in s
    assert "DEPTH" not in s
    assert code_diff_summary(train_py, apply_changes(train_py, {"DEPTH": 9})) == ""


# ----------------------------------------------------------------------------- errors


def test_errors(train_py: str) -> None:
    """Bad arguments and sources raise errors that name the problem."""
    with pytest.raises(DedupError, match="semantic_threshold"):
        Deduplicator(semantic_threshold=0.0)
    with pytest.raises(DedupError, match="unknown dedup layer"):
        Deduplicator(layers=["exact", "fuzzy"])
    with pytest.raises(DedupError, match="ancestor_depth"):
        Deduplicator(ancestor_depth=-1)
    with pytest.raises(DedupError, match="semantic_window"):
        Deduplicator(semantic_window=0)
    d = Deduplicator(ExplodingEmbedder(), use_semantic=False)
    with pytest.raises(DedupError, match="non-empty key"):
        d.add(Candidate("x", train_py), "")
    with pytest.raises(TrainPyError, match="does not parse"):
        d.check(Candidate("broken", "def f(:\n"))
    with pytest.raises(TrainPyError):
        d.check(Candidate("x", train_py, parent_train_py="def f(:\n"))


def test_embedder_failure_is_a_dedup_error(train_py: str) -> None:
    """An embedder that returns the wrong shape raises DedupError, not a numpy error."""
    import numpy as np

    class Bad:
        def embed(self, texts):
            return np.zeros((1, 3), dtype=np.float32)

    d = Deduplicator(Bad())
    d.add(Candidate("silu", train_py.replace(MLP_FWD, SILU_A), parent_train_py=train_py), "r/1")
    with pytest.raises(DedupError, match="shape"):
        d.check(Candidate("silu b", silu_b(train_py), parent_train_py=train_py))


# ----------------------------------------------------------------------------- concurrency


def test_threads_add_and_check_concurrently(train_py: str) -> None:
    """Adds and checks from many threads leave a consistent index."""
    d = Deduplicator(ExplodingEmbedder(), use_semantic=False)
    d.add(Candidate("base", train_py), "results/base")
    values = [round(0.01 + 0.001 * i, 4) for i in range(40)]

    def work(i: int) -> bool:
        cand = child(train_py, f"lr {values[i]}", MATRIX_LR=values[i])
        d.add(cand, f"results/{i}")
        return d.check(cand).duplicate

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(work, range(40)))
    assert len(d) == 41
    assert d.known_code(code_hash(apply_changes(train_py, {"MATRIX_LR": values[7]}))) == "results/7"


@pytest.mark.slow
async def test_acheck_does_not_block_the_loop(train_py: str) -> None:
    """A heartbeat coroutine keeps ticking while acheck loads the model and embeds 300 rows."""
    from swarm.embedding import Embedder

    fresh = Embedder()  # own cache: the first acheck loads the model and embeds every row
    d = Deduplicator(fresh)
    await d.aadd(
        Candidate(
            "switch MLP activation to SiLU",
            train_py.replace(MLP_FWD, SILU_A),
            parent_train_py=train_py,
        ),
        "results/silu",
    )
    for i in range(300):  # known rows of the same group, embedded in batches by the check
        await d.aadd(
            Candidate(
                f"SiLU in the MLP, run {i} with notes on seed {i * 7}",
                train_py.replace(MLP_FWD, SILU_A),
                parent_train_py=train_py,
            ),
            f"results/silu-{i}",
        )
    ticks: list[float] = []
    stop = asyncio.Event()

    async def heartbeat() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.02)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(heartbeat())
        t0 = time.perf_counter()
        v = await d.acheck(
            Candidate(
                "SiLU (x * sigmoid(x)) in the MLP instead of ReLU squared",
                silu_b(train_py),
                parent_train_py=train_py,
            )
        )
        elapsed = time.perf_counter() - t0
        stop.set()
    assert v.layer == "semantic"
    assert elapsed > 0.3  # real work happened inside acheck (model load, 302 texts)
    assert d.stats()["pending_vectors"] <= 1
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    # blocking the loop would show as one gap as long as the whole check; imports of the
    # model code hold the GIL for moments, so allow short stalls on a busy machine
    assert len(ticks) >= elapsed / 0.02 * 0.3
    assert max(gaps) < min(1.0, elapsed / 3), (max(gaps), elapsed)
    assert await d.aremove("results/silu")
