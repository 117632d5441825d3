"""Fixtures of the proposer tests (defined in proposer_support)."""

from proposer_support import (  # noqa: F401
    ctx_factory,
    stub_llm,
    synthetic_src,
    train_src,
)
