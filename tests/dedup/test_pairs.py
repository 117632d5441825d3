"""The labeled pair set (tests/data/dedup_pairs.tsv) and the calibrated deduplicator on it."""

from __future__ import annotations

from collections import Counter

import pytest

from swarm.dedup import DEFAULT_SEMANTIC_THRESHOLD, Deduplicator

REQUIRED_KINDS = {
    "paraphrase",
    "real_paraphrase",
    "near_value",
    "real_near_value",
    "same_change_other_parent",
    "ancestor",
    "ancestor_moved",
    "multi_same",
    "multi_subset",
    "noop",
    "code_paraphrase",
    "code_other_idea",
    "code_near_value",
    "code_plus_constant",
    "code_other_parent",
    "unrelated",
}


@pytest.fixture(scope="module")
def pairs(calib):
    return calib.load_pairs()


def test_labeled_set_shape(pairs) -> None:
    """At least 200 pairs, both labels well represented, every kind of the issue present."""
    assert len(pairs) >= 200
    assert len({p.id for p in pairs}) == len(pairs)
    labels = Counter(p.label for p in pairs)
    assert set(labels) == {0, 1} and min(labels.values()) >= 0.35 * len(pairs)
    assert {p.kind for p in pairs} >= REQUIRED_KINDS
    for p in pairs:
        assert p.b.desc, p.id
        assert len({q.label for q in pairs if q.kind == p.kind}) == 1, p.kind


@pytest.mark.slow
def test_every_pair_rebuilds_from_train_py(pairs, calib, train_py: str) -> None:
    """Both sides of every row rebuild on the project's train.py (code edits still apply)."""
    builder = calib.Builder(train_py)
    for p in pairs:
        if p.a.present:
            builder.side(p.a, p.id)
        parent, src = builder.side(p.b, p.id)
        if p.kind != "noop":
            assert src != parent, p.id


def test_builder_rejects_edits_that_no_longer_apply(calib, train_py: str) -> None:
    """A code edit whose text is gone from train.py fails loudly, naming the row."""
    side = calib.Side("", "", '[["no such text", "x"]]', "d")
    with pytest.raises(ValueError, match="pair z"):
        calib.Builder(train_py).side(side, "pair z")


@pytest.fixture(scope="module")
def outcomes(pairs, calib, train_py: str, embedder):
    """Each pair through a fresh deduplicator with every layer at the default threshold."""
    builder = calib.Builder(train_py)
    out = []
    for p in pairs:
        v = calib.run_pair(Deduplicator(embedder), builder, p)
        vecs = embedder.embed([p.a.desc, p.b.desc]) if p.a.present else None
        desc_cos = float(vecs[0] @ vecs[1]) if vecs is not None else 0.0
        out.append((p, v, desc_cos))
    return out


def _pr(rows) -> tuple[float, float]:
    tp = sum(1 for label, pred in rows if label and pred)
    fp = sum(1 for label, pred in rows if not label and pred)
    fn = sum(1 for label, pred in rows if label and not pred)
    return tp / max(1, tp + fp), tp / max(1, tp + fn)


@pytest.mark.slow
def test_combination_precision_and_recall(outcomes) -> None:
    """All layers at the calibrated threshold: precision and recall >= 0.95 on the set."""
    precision, recall = _pr([(p.label, v.duplicate) for p, v, _ in outcomes])
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)


@pytest.mark.slow
def test_combination_on_the_held_out_part(outcomes, calib) -> None:
    """On the pairs the threshold was not tuned on: precision and recall >= 0.95 (docs/dedup.md)."""
    _, held = calib.split_pairs([p for p, _, _ in outcomes])
    held_ids = {p.id for p in held}
    precision, recall = _pr([(p.label, v.duplicate) for p, v, _ in outcomes if p.id in held_ids])
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)


@pytest.mark.slow
def test_code_layers_never_false_positive(outcomes) -> None:
    """No pair is wrongly blocked by the noop, exact or structural layer."""
    wrong = [p.id for p, v, _ in outcomes if not p.label and v.duplicate and v.layer != "semantic"]
    assert wrong == []


@pytest.mark.slow
def test_constant_duplicates_all_caught_by_code_layers(outcomes) -> None:
    """Every duplicate that changes only constants is caught without words."""
    missed = [
        p.id
        for p, v, _ in outcomes
        if p.label
        and not p.kind.startswith("code")
        and v.layer not in ("noop", "exact", "structural")
    ]
    assert missed == []


@pytest.mark.slow
def test_semantic_layer_on_code_changes(outcomes) -> None:
    """Code changes: other implementations of one idea caught, other ideas/settings kept apart."""
    code = [(p, v) for p, v, _ in outcomes if p.kind.startswith("code")]
    paraphrases = [v for p, v in code if p.kind == "code_paraphrase"]
    caught = sum(v.duplicate for v in paraphrases) / len(paraphrases)
    assert caught >= 0.8, caught  # measured 35/42: some paraphrases touch other code
    assert any(v.layer == "semantic" for v in paraphrases)
    others = [p.id for p, v in code if not p.label and v.duplicate]
    assert len(others) <= 0.1 * sum(1 for p, _ in code if not p.label), others


@pytest.mark.slow
def test_description_only_at_092_is_not_enough(outcomes) -> None:
    """The original fork's check (description cosine >= 0.92) misses most duplicates and
    blocks many new experiments; the layered check does far better on the same pairs."""
    desc = _pr([(p.label, c >= 0.92) for p, _, c in outcomes])
    ours = _pr([(p.label, v.duplicate) for p, v, _ in outcomes])
    assert desc[1] < 0.5 and desc[0] < 0.6, desc
    assert ours[0] - desc[0] > 0.3 and ours[1] - desc[1] > 0.4
    near = [c for p, _, c in outcomes if p.kind == "near_value"]
    assert sum(c >= 0.92 for c in near) >= 5  # words call near values duplicates
    assert DEFAULT_SEMANTIC_THRESHOLD < 0.92


def test_split_is_fixed_disjoint_and_stratified(pairs, calib) -> None:
    """The tuning / held-out split covers every pair once, holds every kind in both parts,
    and does not depend on the order of the rows."""
    tune, held = calib.split_pairs(pairs)
    assert {p.id for p in tune} | {p.id for p in held} == {p.id for p in pairs}
    assert not {p.id for p in tune} & {p.id for p in held}
    sizes = Counter(p.kind for p in pairs)
    assert len(tune) == sum((n + 1) // 2 for n in sizes.values())
    for kind, n in sizes.items():
        if n >= 2:
            assert any(p.kind == kind for p in held), kind
    again_tune, _ = calib.split_pairs(list(reversed(pairs)))
    assert {p.id for p in again_tune} == {p.id for p in tune}


def test_report_tunes_on_one_part_and_scores_the_other(pairs, calib) -> None:
    """The threshold comes from the tuning part alone; the table counts only held-out pairs."""
    tune, held = calib.split_pairs(pairs)
    tune_ids = {p.id for p in tune}

    def fake(p):
        # tuning part: duplicates at 0.80, new ones at 0.60; held-out part: the reverse
        high = bool(p.label) == (p.id in tune_ids)
        return calib.PairResult(
            p,
            {"noop": False, "exact": False, "structural": False},
            None,
            0.80 if high else 0.60,
            0.0,
            0.0,
        )

    _text, data = calib.report([fake(p) for p in pairs])
    assert data["chosen_threshold"] == 0.80
    assert (data["tune_pairs"], data["held_out_pairs"]) == (len(tune), len(held))
    comb = data["held_out"]["combination (t=0.80)"]
    assert comb["tp"] + comb["fp"] + comb["fn"] + comb["tn"] == len(held)
    assert comb["tp"] == 0 and comb["fp"] == sum(1 for p in held if not p.label)
