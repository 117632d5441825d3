"""evaluate_bpb, the fixed metric, against hand computations on models with known losses."""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn


class ByteScaledLoss(nn.Module):
    """Loss of a target = 0.25 nats per byte of that target; inf on special tokens."""

    def __init__(self, token_bytes: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("tb", token_bytes.float())
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x, y, reduction="mean"):
        assert reduction == "none"
        per_byte = 0.25 * self.tb[y]
        return torch.where(self.tb[y] > 0, per_byte, torch.full_like(per_byte, math.inf))


class UniformLogits(nn.Module):
    """Predicts every token with the same probability: loss ln(V) on every target."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, x, y, reduction="mean"):
        logits = self.bias.expand(*y.shape, self.vocab)
        return F.cross_entropy(logits.reshape(-1, self.vocab), y.reshape(-1), reduction=reduction)


def eval_targets(prep: ModuleType, tokenizer, batch_size: int) -> torch.Tensor:
    """The targets evaluate_bpb scores, read independently from the val loader."""
    steps = prep.EVAL_TOKENS // (batch_size * prep.MAX_SEQ_LEN)
    loader = prep.make_dataloader(tokenizer, batch_size, prep.MAX_SEQ_LEN, "val", device="cpu")
    return torch.cat([next(loader)[1].reshape(-1) for _ in range(steps)])


def test_bpb_of_byte_proportional_loss_is_exact(prep: ModuleType, tokenizer) -> None:
    """0.25 nats per byte is 0.25/ln 2 bits per byte; special targets (inf) are excluded."""
    model = ByteScaledLoss(prep.get_token_bytes("cpu"))
    bpb = prep.evaluate_bpb(model, tokenizer, batch_size=8)
    assert bpb == pytest.approx(0.25 / math.log(2), rel=1e-9)


def test_bpb_of_uniform_model_matches_hand_computation(prep: ModuleType, tokenizer) -> None:
    """ln(V) nats per counted target over the targets' total bytes, converted to bits."""
    vocab = tokenizer.get_vocab_size()
    tb = prep.get_token_bytes("cpu")
    targets = eval_targets(prep, tokenizer, 8)
    assert targets.numel() == prep.EVAL_TOKENS
    nbytes = tb[targets]
    counted = int((nbytes > 0).sum())
    assert 0 < counted < targets.numel()  # some BOS targets really are excluded
    expected = counted * math.log(vocab) / (math.log(2) * int(nbytes.sum()))
    bpb = prep.evaluate_bpb(UniformLogits(vocab), tokenizer, batch_size=8)
    assert bpb == pytest.approx(expected, rel=1e-6)  # the model computes ln(V) in float32


def test_bpb_does_not_depend_on_batch_size(prep: ModuleType, tokenizer) -> None:
    """The scored rows are the same for any batch size that divides the evaluation."""
    model = UniformLogits(tokenizer.get_vocab_size())
    a = prep.evaluate_bpb(model, tokenizer, batch_size=4)
    b = prep.evaluate_bpb(model, tokenizer, batch_size=16)
    assert a == pytest.approx(b, rel=1e-12)


def test_batch_larger_than_evaluation_is_rejected(prep: ModuleType, tokenizer) -> None:
    """A batch bigger than EVAL_TOKENS raises and says which batch size would work."""
    too_big = prep.EVAL_TOKENS // prep.MAX_SEQ_LEN + 1
    with pytest.raises(ValueError, match=f"at most {too_big - 1}"):
        prep.evaluate_bpb(UniformLogits(tokenizer.get_vocab_size()), tokenizer, too_big)


def test_unigram_bpb_matches_hand_computation(prep: ModuleType, tokenizer) -> None:
    """The unigram reference is the entropy of the counted targets' frequencies per byte."""
    tb = prep.get_token_bytes("cpu").numpy()
    targets = eval_targets(prep, tokenizer, 8).numpy()
    targets = targets[tb[targets] > 0]
    _, counts = np.unique(targets, return_counts=True)
    p = counts / counts.sum()
    expected = -(counts * np.log2(p)).sum() / tb[targets].sum()
    assert prep.unigram_bpb(tokenizer, 8) == pytest.approx(expected, rel=1e-9)
    assert 1.0 < expected < math.log2(tokenizer.get_vocab_size())
