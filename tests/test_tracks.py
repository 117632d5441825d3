"""The track table (swarm.tracks) against prepare.py's PROFILES, read from its source.

prepare.py must stay a standalone script (it imports torch and configures itself on import),
so it is parsed, never imported: each ``Profile(...)`` call's keyword literals are evaluated.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from swarm.config import PROFILE_DEFAULTS, PROFILES
from swarm.namespace import BEST_MAX_STEP_BY_TRACK
from swarm.proposers.base import SEQ_LEN_BY_TRACK, TRACK_SHAPES
from swarm.tracks import REFERENCE_SEQ_LEN, TRACKS, get_track
from swarm.verify.plausible import GEOMETRY
from swarm.verify.trust_records import DEFAULT_SIGMA

PREPARE_PY = Path(__file__).resolve().parents[1] / "prepare.py"


def _module_constants(tree: ast.Module) -> dict[str, Any]:
    """Top-level ``NAME = <literal or simple expression>`` assignments of prepare.py."""
    found: dict[str, Any] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            try:
                found[node.targets[0].id] = _evaluate(node.value, found)
            except ValueError:
                continue
    return found


def _evaluate(node: ast.expr, names: dict[str, Any]) -> Any:
    """A literal, a known name, an f-string of those, or arithmetic on them (else ValueError)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left, names), _evaluate(node.right, names)
        ops = {
            ast.Mult: lambda a, b: a * b,
            ast.Pow: lambda a, b: a**b,
            ast.Add: lambda a, b: a + b,
            ast.Sub: lambda a, b: a - b,
        }
        if type(node.op) in ops:
            return ops[type(node.op)](left, right)
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                spec = value.format_spec
                fmt = (
                    "".join(str(_evaluate(v, names)) for v in spec.values)
                    if isinstance(spec, ast.JoinedStr)
                    else ""
                )
                parts.append(format(_evaluate(value.value, names), fmt))
            else:
                parts.append(str(_evaluate(value, names)))
        return "".join(parts)
    raise ValueError(ast.dump(node))


def _prepare_profiles(path: Path = PREPARE_PY) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """prepare.py's PROFILES (name -> Profile keywords) and its module constants."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    constants = _module_constants(tree)
    profiles: dict[str, dict[str, Any]] = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "Profile"
        ):
            fields = {kw.arg: _evaluate(kw.value, constants) for kw in node.keywords if kw.arg}
            profiles[fields["name"]] = fields
    return profiles, constants


def test_same_track_names_as_prepare() -> None:
    """The table names exactly the tracks prepare.py can prepare."""
    profiles, _ = _prepare_profiles()
    assert set(profiles) == set(TRACKS)
    assert set(PROFILES) == set(TRACKS)


@pytest.mark.parametrize("name", sorted(TRACKS))
def test_track_matches_prepare_profile(name: str) -> None:
    """Every fact the table shares with prepare.py's Profile has the same value there."""
    profile = _prepare_profiles()[0][name]
    track = TRACKS[name]
    assert (track.seq_len, track.width_divisor, track.batch_divisor) == (
        profile["max_seq_len"],
        profile["width_divisor"],
        profile["batch_divisor"],
    )
    assert (track.vocab_size, track.eval_tokens) == (profile["vocab_size"], profile["eval_tokens"])
    assert (track.cache_subdir, track.val_filename) == (
        profile["cache_subdir"],
        profile["val_filename"],
    )
    assert track.budget_s == profile["time_budget"]


def test_reference_seq_len_matches_prepare() -> None:
    """The block's reference sequence length is prepare.py's REFERENCE_SEQ_LEN."""
    assert _prepare_profiles()[1]["REFERENCE_SEQ_LEN"] == REFERENCE_SEQ_LEN


def test_parser_sees_a_changed_value(tmp_path: Path) -> None:
    """The comparison can fail: a prepare.py with another smoke batch divisor disagrees."""
    changed = tmp_path / "prepare.py"
    source = PREPARE_PY.read_text(encoding="utf-8")
    assert source.count("batch_divisor=64") == 1
    changed.write_text(source.replace("batch_divisor=64", "batch_divisor=16"), encoding="utf-8")
    smoke = _prepare_profiles(changed)[0]["smoke"]
    assert smoke["batch_divisor"] == 16 != TRACKS["smoke"].batch_divisor


def test_every_copy_reads_the_table() -> None:
    """Config defaults, proposer shapes, plausibility geometry and trust defaults agree with
    the table."""
    for name, track in TRACKS.items():
        assert PROFILE_DEFAULTS[name] == {
            "budget_s": track.budget_s,
            "startup_allowance_s": track.startup_allowance_s,
            "grace_s": track.grace_s,
        }
        assert TRACK_SHAPES[name] == track.shape
        assert SEQ_LEN_BY_TRACK[name] == track.seq_len
        assert GEOMETRY[name] == (track.seq_len, track.batch_divisor, REFERENCE_SEQ_LEN)
        assert DEFAULT_SIGMA[name] == track.seed_sigma
        assert BEST_MAX_STEP_BY_TRACK[name] == track.best_max_step


def test_unknown_track_reads_as_standard() -> None:
    """A name the table lacks gets the standard track (what prepare.py defaults to)."""
    assert get_track("smoke") is TRACKS["smoke"]
    assert get_track("no-such-track") is TRACKS["standard"]
