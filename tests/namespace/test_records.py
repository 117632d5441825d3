"""Records: round trips, and records written by other clients (the original fork's shapes)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from swarm.errors import ProtocolError
from swarm.records import (
    Best,
    Claim,
    Hypothesis,
    Insight,
    LeaderboardEntry,
    Result,
    decode_record,
    encode_record,
    from_iso,
    to_iso,
)

T0 = 1_760_000_000.0


def full_result() -> Result:
    return Result(
        key="results/ada--matrix-lr-0-04-0-05--abc123",
        agent_id="ada",
        status="keep",
        description="MATRIX_LR 0.04 → 0.05",
        train_py="MATRIX_LR = 0.05\n",
        val_bpb=0.9912,
        memory_gb=44.0,
        completed_at=T0,
        vram_tier="xl",
        track="standard",
        parent_hash="a" * 64,
        code_hash="b" * 64,
        gpu_name="NVIDIA H100 80GB HBM3",
        host="node1",
        seed=7,
        prepare_hash="c" * 64,
        verified=True,
        num_steps=953,
        total_tokens_M=499.6,
        mfu_percent=39.8,
        training_seconds=300.1,
        peak_vram_mb=45060.2,
        failure=None,
        log_tail="step 953 ...",
        changes={"MATRIX_LR": (0.04, 0.05)},
        proposer="search",
        delta=-0.0067,
        extra={"commit": "abc1234"},
    )


def roundtrip_json(data: dict) -> dict:
    """Through the storage form (JSON text) and back, as a backend would."""
    return decode_record("k", encode_record(data))


def test_result_round_trip_keeps_every_field() -> None:
    """A Result written and read back is equal, extra fields included."""
    r = full_result()
    back = Result.from_json(r.key, roundtrip_json(r.to_json()))
    assert back == r


def test_result_json_uses_original_field_names() -> None:
    """The stored result has the original clients' names (delta as delta_vs_best, ISO time)."""
    data = full_result().to_json()
    for name in (
        "agent_id",
        "val_bpb",
        "memory_gb",
        "status",
        "description",
        "train_py",
        "completed_at",
        "vram_tier",
    ):
        assert name in data
    assert data["delta_vs_best"] == pytest.approx(-0.0067)
    assert datetime.fromisoformat(data["completed_at"]).timestamp() == pytest.approx(T0)
    assert data["changes"] == {"MATRIX_LR": [0.04, 0.05]}


def test_result_from_original_client() -> None:
    """A result as the original coordinator publishes it reads with defaults and keeps extras."""
    original = {
        "agent_id": "gpu0",
        "val_bpb": 0.997900,
        "memory_gb": 44.0,
        "vram_tier": "xl",
        "vram_total_gb": 79.6,
        "status": "keep",
        "commit": "a1b2c3d",
        "description": "increase LR to 0.04",
        "train_py": "print('hi')\n",
        "repo_url": "https://github.com/someone/autoresearch-at-home",
        "branch": "main",
        "commit_url": None,
        "completed_at": "2025-03-10T12:00:00.123456+00:00",
        "delta_vs_best": -0.002,
        "global_best_at_publish": 0.9999,
        "delta_vs_own_best": None,
        "agent_best_at_publish": None,
    }
    r = Result.from_json("results/gpu0--increase-lr-to-0-04--a7f3b2", original)
    assert r.agent_id == "gpu0" and r.status == "keep" and r.val_bpb == pytest.approx(0.9979)
    assert r.track == "standard"  # clients that do not know tracks run the standard one
    assert r.delta == pytest.approx(-0.002)
    assert r.completed_at == pytest.approx(
        datetime(2025, 3, 10, 12, 0, 0, 123456, tzinfo=UTC).timestamp()
    )
    assert r.code_hash == "" and r.seed is None and r.changes == {}
    assert r.extra["repo_url"].startswith("https://") and r.extra["vram_total_gb"] == 79.6
    again = r.to_json()
    for name, value in original.items():
        if name != "completed_at":
            assert again[name] == value, name


def test_result_numbers_as_strings_and_crash_zero() -> None:
    """Numbers written as strings parse; a crash's 0.0 val_bpb reads as no metric."""
    r = Result.from_json(
        "results/x",
        {
            "agent_id": "x",
            "status": "KEEP",
            "val_bpb": "0.9931",
            "num_steps": "953",
            "seed": "3.0",
            "verified": "true",
        },
    )
    assert r.status == "keep" and r.val_bpb == pytest.approx(0.9931)
    assert r.num_steps == 953 and r.seed == 3 and r.verified is True
    crash = Result.from_json("results/y", {"agent_id": "y", "status": "crash", "val_bpb": 0.0})
    assert crash.val_bpb is None and not crash.ok
    junk = Result.from_json("results/z", {"val_bpb": "not a number", "status": None})
    assert junk.val_bpb is None and junk.status == "unknown" and junk.agent_id == "unknown"


@pytest.mark.parametrize("value", [[1, 2], "text", 3, None])
def test_unusable_record_raises_protocol_error_naming_key(value: object) -> None:
    """A record that is not a JSON object is refused with the key in the message."""
    with pytest.raises(ProtocolError, match="results/bad"):
        Result.from_json("results/bad", value)


def test_decode_record_rejects_bad_json_and_non_objects() -> None:
    """decode_record names the key for invalid JSON and for JSON that is not an object."""
    with pytest.raises(ProtocolError, match=r"claims/a.*not valid JSON"):
        decode_record("claims/a", "{nope")
    with pytest.raises(ProtocolError, match=r"claims/b.*not an object"):
        decode_record("claims/b", "[1,2]")
    assert decode_record("claims/c", b'{"a": 1}') == {"a": 1}


def test_timestamps_in_any_form() -> None:
    """ISO with Z, naive ISO (UTC), epoch seconds, epoch ms and numeric strings all parse."""
    assert from_iso("2025-01-01T00:00:00Z") == datetime(2025, 1, 1, tzinfo=UTC).timestamp()
    assert from_iso("2025-01-01T00:00:00") == datetime(2025, 1, 1, tzinfo=UTC).timestamp()
    assert from_iso(T0) == T0 and from_iso(str(T0)) == T0
    assert from_iso(T0 * 1000) == pytest.approx(T0)
    assert from_iso("yesterday") is None and from_iso(None) is None and from_iso(True) is None
    assert from_iso(to_iso(T0)) == pytest.approx(T0)


def test_claim_from_original_client_uses_fifteen_minute_rule() -> None:
    """A claim without heartbeat_at is live for the legacy TTL after claimed_at, then dead."""
    original = {
        "agent_id": "gpu3",
        "description": "halve warmdown",
        "experiment_key": "gpu3--halve-warmdown--1a2b3c",
        "claimed_at": to_iso(T0),
        "expected_duration_seconds": 300,
        "status": "claimed",
    }
    c = Claim.from_json("claims/gpu3--halve-warmdown--1a2b3c", original)
    assert c.heartbeat_at is None and c.key.startswith("claims/")
    assert c.is_live(T0 + 899, legacy_ttl_s=900)
    assert not c.is_live(T0 + 901, legacy_ttl_s=900)
    assert c.to_json()["experiment_key"] == original["experiment_key"]


def test_claim_with_heartbeat_uses_its_lease() -> None:
    """A heartbeating claim is live until heartbeat_at + lease_s, whatever claimed_at says."""
    c = Claim(agent_id="a", description="d", claimed_at=T0 - 5000, heartbeat_at=T0, lease_s=90)
    assert c.is_live(T0 + 89) and not c.is_live(T0 + 91)
    released = Claim(agent_id="a", description="d", heartbeat_at=T0, lease_s=90, released_at=T0)
    assert not released.is_live(T0 + 1)
    nothing = Claim(agent_id="a", description="d")
    assert not nothing.is_live(T0)


def test_claim_round_trip_and_lock_form() -> None:
    """A claim round-trips; read from its lock record it keeps the claim key and lock key."""
    c = Claim(
        key="claims/a--d--123456",
        agent_id="a",
        description="d",
        claimed_at=T0,
        heartbeat_at=T0 + 30,
        lease_s=90,
        parent_hash="p" * 6,
        code_hash="c" * 6,
        track="smoke",
        vram_tier="cpu",
        gpu_name="",
        host="h",
        lock_key="locks/exp/pppppp--cccccc/g000001",
        nonce="n1",
    )
    assert Claim.from_json(c.key, roundtrip_json(c.to_json())) == c
    lock = Claim.from_json(c.lock_key, roundtrip_json(c.to_json()))
    assert lock.key == c.key and lock.lock_key == c.lock_key and lock.nonce == "n1"


def test_best_round_trip_with_previous() -> None:
    """A best with a previous best round-trips; the previous keeps its source but no chain."""
    older = Best(result=full_result(), key="best/metadata", version=1, achieved_at=T0)
    newer_result = Result(
        agent_id="bob",
        status="keep",
        description="DEPTH 8 → 9",
        train_py="DEPTH = 9\n",
        val_bpb=0.985,
        completed_at=T0 + 60,
        vram_tier="xl",
        key="results/bob--depth--111111",
    )
    newer = Best(
        result=newer_result,
        key="best/metadata",
        previous=older,
        version=2,
        improvement_over_previous=0.0062,
        achieved_at=T0 + 61,
        confirmations=({"seed": 1, "val_bpb": 0.985},),
    )
    data = roundtrip_json(newer.to_json())
    assert data["val_bpb"] == 0.985 and data["best_val_bpb"] == 0.985
    assert data["achieved_by"] == "bob" and data["previous_best_by"] == "ada"
    assert data["previous_best_val_bpb"] == pytest.approx(0.9912)
    assert data["previous_best"]["train_py"] == "MATRIX_LR = 0.05\n"
    assert "previous_best" not in data["previous_best"]
    back = Best.from_json("best/metadata", data)
    assert back.val_bpb == 0.985 and back.agent_id == "bob" and back.version == 2
    assert back.result.key == "results/bob--depth--111111"
    assert back.previous is not None and back.previous.train_py == "MATRIX_LR = 0.05\n"
    assert back.previous.previous is None
    assert back.confirmations == ({"seed": 1, "val_bpb": 0.985},)


def test_best_from_original_metadata() -> None:
    """The original best/metadata (result fields + best_* fields) reads as a Best with a previous."""
    original = {
        "agent_id": "gpu0",
        "val_bpb": 0.9931,
        "memory_gb": 44.1,
        "status": "keep",
        "description": "warmdown 0.5 → 0.7",
        "train_py": "x = 1\n",
        "completed_at": to_iso(T0),
        "best_val_bpb": 0.9931,
        "achieved_by": "gpu0",
        "achieved_at": to_iso(T0 + 1),
        "previous_best_val_bpb": 0.9979,
        "previous_best_by": "gpu1",
        "previous_best_description": "baseline",
        "improvement_over_previous": 0.0048,
    }
    b = Best.from_json("best/metadata", original)
    assert b.val_bpb == pytest.approx(0.9931) and b.agent_id == "gpu0" and b.kind == "global"
    assert b.previous is not None and b.previous.val_bpb == pytest.approx(0.9979)
    assert b.previous.agent_id == "gpu1" and b.previous.result.description == "baseline"
    tier = Best.from_json(
        "best/tier/small/metadata", {"val_bpb": "1.01", "agent_id": "z", "vram_tier": "small"}
    )
    assert tier.kind == "tier" and tier.tier == "small" and tier.val_bpb == pytest.approx(1.01)


def test_hypothesis_round_trip_and_original_shape() -> None:
    """Hypotheses round-trip; the original shape (and a JSON-string config) reads."""
    h = Hypothesis(
        key="hypotheses/a--t--123456",
        agent_id="a",
        title="Deeper is better",
        hypothesis="DEPTH 8 → 10 should help at this budget",
        suggested_config={"DEPTH": 10},
        evidence_keys=("results/x",),
        priority=4,
        created_at=T0,
        track="standard",
        parent_hash="ab" * 32,
    )
    assert Hypothesis.from_json(h.key, roundtrip_json(h.to_json())) == h
    original = {
        "agent_id": "gpu2",
        "title": "Try smaller batch",
        "hypothesis": "TOTAL_BATCH_SIZE 2**19 → 2**18",
        "suggested_config": '{"TOTAL_BATCH_SIZE": 262144}',
        "evidence_keys": "results/q",
        "priority": "2",
        "created_at": to_iso(T0),
    }
    o = Hypothesis.from_json("hypotheses/gpu2--try--abcdef", original)
    assert o.suggested_config == {"TOTAL_BATCH_SIZE": 262144}
    assert (
        o.evidence_keys == ("results/q",) and o.priority == 2 and o.created_at == pytest.approx(T0)
    )


def test_insight_round_trip_and_original_shape() -> None:
    """Insights round-trip and read the original (agent_id, insight, evidence_keys, posted_at)."""
    i = Insight(
        key="insights/a--lr--123456",
        agent_id="a",
        insight="LR above 0.08 diverges",
        evidence_keys=("results/1", "results/2"),
        posted_at=T0,
        track="smoke",
        extra={"mood": "sure"},
    )
    assert Insight.from_json(i.key, roundtrip_json(i.to_json())) == i
    o = Insight.from_json(
        "insights/x",
        {
            "agent_id": "g",
            "insight": "warmup matters",
            "evidence_keys": [],
            "posted_at": to_iso(T0),
        },
    )
    assert (
        o.insight == "warmup matters" and o.posted_at == pytest.approx(T0) and o.track == "standard"
    )


def test_leaderboard_entry_skips_entries_without_metric() -> None:
    """Leaderboard entries round-trip; one without a usable val_bpb is skipped, not fatal."""
    e = LeaderboardEntry.from_result(full_result())
    assert LeaderboardEntry.from_json("leaderboard", roundtrip_json(e.to_json())) == e
    assert LeaderboardEntry.from_json("leaderboard", {"agent_id": "x"}) is None


def test_encode_record_is_compact_json() -> None:
    """encode_record writes JSON text that any JSON parser reads back."""
    text = encode_record(full_result().to_json())
    assert orjson.loads(text)["agent_id"] == "ada"
