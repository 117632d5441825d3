"""JSON encoding of replies in small steps.

orjson holds the GIL for the whole of one call, so encoding a 30 MiB reply in one call
(even in a worker thread) stalls the event loop for as long. ``encode`` gives the same
bytes as ``orjson.dumps`` but encodes large containers one element at a time and long
strings in slices of ``STEP`` characters, so that the GIL changes hands in between.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["STEP", "encode", "encoded_size", "weight"]

STEP = 64 << 10  # characters of a string, or estimated bytes of a container, per call


def weight(obj: Any) -> int:
    """Characters of strings in ``obj`` (keys included), 8 for any other scalar."""
    if isinstance(obj, str):
        return len(obj)
    if isinstance(obj, dict):
        return sum(len(k) + weight(v) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return sum(weight(v) for v in obj)
    return 8


def _string(text: str) -> bytes:
    if len(text) <= STEP:
        return orjson.dumps(text)
    parts = [orjson.dumps(text[i : i + STEP])[1:-1] for i in range(0, len(text), STEP)]
    return b'"' + b"".join(parts) + b'"'


def encode(obj: Any) -> bytes:
    """``orjson.dumps(obj)``, in steps of about STEP characters."""
    if weight(obj) <= STEP:
        return orjson.dumps(obj)
    if isinstance(obj, str):
        return _string(obj)
    if isinstance(obj, dict):
        return (
            b"{" + b",".join(orjson.dumps(str(k)) + b":" + encode(v) for k, v in obj.items()) + b"}"
        )
    if isinstance(obj, list | tuple):
        return b"[" + b",".join(encode(v) for v in obj) + b"]"
    return orjson.dumps(obj)


def encoded_size(obj: Any) -> int:
    """Bytes ``obj`` takes in a tool reply: once as JSON in ``structuredContent`` and once
    more as an escaped JSON string in ``content[0].text``."""
    enc = encode(obj)
    return 2 * len(enc) + enc.count(b'"') + enc.count(b"\\")
