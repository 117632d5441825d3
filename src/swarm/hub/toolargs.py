"""Arguments of the hub's tools: type checks with messages that name the argument,
wire values (base64), and fitting entries into a request's reply budget."""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Mapping
from typing import Any, cast

from swarm.errors import InvalidRequestError
from swarm.hub.encode import encoded_size
from swarm.hub.limits import MAX_OFFSET, RequestBudget
from swarm.hub.protocol import ERR_INVALID_PARAMS, MAX_ITEMS, RpcError
from swarm.memory.store import check_text

__all__ = [
    "ItemArgs",
    "bad",
    "decode_value",
    "embed_source_arg",
    "fit",
    "item_error",
    "key_list",
    "opt_bool",
    "opt_int",
    "opt_str",
    "parse_items",
    "req_str",
]

_INLINE_TEXT = 256 << 10  # characters of values past which replies are measured in a thread

ItemArgs = tuple[str, str, str | None, bool, bool, str | None]
"""(key, value, description, base64, embed, embed_source) of one create_memory item."""


def bad(message: str) -> RpcError:
    return RpcError(ERR_INVALID_PARAMS, message)


def opt_str(args: Mapping[str, Any], name: str, where: str) -> str | None:
    v = args.get(name)
    if v is None or isinstance(v, str):
        return v
    raise bad(f"{where}{name} must be a string, got {type(v).__name__}")


def req_str(args: Mapping[str, Any], name: str, where: str, tool: str) -> str:
    if name not in args or args[name] is None:
        raise bad(f"{tool}: missing required argument {where}{name} (a string)")
    v = opt_str(args, name, where)
    assert v is not None
    return v


def opt_bool(args: Mapping[str, Any], name: str, where: str) -> bool | None:
    v = args.get(name)
    if v is None or isinstance(v, bool):
        return v
    raise bad(f"{where}{name} must be true or false, got {v!r}")


def opt_int(args: Mapping[str, Any], name: str, lo: int, default: int, hi: int = MAX_OFFSET) -> int:
    v = args.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        else:
            raise bad(f"{name} must be an integer, got {v!r}")
    if v < lo:
        raise bad(f"{name} must be at least {lo}, got {v}")
    if v > hi:
        raise bad(f"{name} must be at most {hi}, got {v}")
    return v


def embed_source_arg(args: Mapping[str, Any], where: str) -> str | None:
    v = args.get("embed_source")
    if v is None:
        return None
    if v not in ("description", "value"):
        raise bad(f"{where}embed_source must be 'description' or 'value', got {v!r}")
    return cast(str, v)


def key_list(args: Mapping[str, Any], tool: str) -> list[str]:
    keys = args.get("key_names")
    if keys is None:
        raise bad(f"{tool}: missing required argument key_names (a list of 1-{MAX_ITEMS} keys)")
    if not isinstance(keys, list):
        raise bad(f"{tool}: key_names must be a list of strings, got {type(keys).__name__}")
    if not keys:
        raise bad(f"{tool}: key_names is empty; give 1-{MAX_ITEMS} keys")
    if len(keys) > MAX_ITEMS:
        raise bad(f"{tool}: {len(keys)} keys in one call; send at most {MAX_ITEMS} per call")
    for i, k in enumerate(keys):
        if not isinstance(k, str):
            raise bad(f"{tool}: key_names[{i}] must be a string, got {type(k).__name__}")
    return keys


def decode_value(value: str, is_b64: bool, key: str, max_bytes: int) -> str:
    """The text of a wire value (base64-decoded when flagged); InvalidRequestError if bad."""
    if not is_b64:
        return check_text(value, f"value of {key!r}", max_bytes=max_bytes)
    if len(value) > (max_bytes + 2) // 3 * 4 + 4:
        raise InvalidRequestError(
            f"value of {key!r} is over the {max_bytes}-byte limit ({len(value)} base64 characters)"
        )
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise InvalidRequestError(f"value of {key!r} is not valid base64: {exc}") from exc
    if len(raw) > max_bytes:
        raise InvalidRequestError(
            f"value of {key!r} is {len(raw)} bytes, over the {max_bytes}-byte limit"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(
            f"value of {key!r} decodes from base64 to bytes that are not UTF-8 text "
            f"(byte {exc.start}); the hub stores text only"
        ) from exc


async def fit(
    entries: list[dict[str, Any]], budget: RequestBudget, *, stop_at_first: bool = False
) -> list[int | None]:
    """Each entry's reply cost when it fits in what is left of ``budget`` (taken from it),
    None when it does not (and, with ``stop_at_first``, for every entry after that).
    Large entries are measured in a thread, off the event loop."""

    def run() -> list[int | None]:
        out: list[int | None] = []
        for entry, chars in zip(entries, weights, strict=True):
            hopeless = (stop_at_first and None in out) or (
                budget.replied_values and 2 * chars > budget.reply_left  # 1 byte a char, twice
            )
            cost = None if hopeless else encoded_size(entry)
            out.append(cost if cost is not None and budget.take_reply(cost) else None)
        return out

    weights = [_text_chars(e) for e in entries]
    # 13 bytes a character at worst (\u0001 in structuredContent, \\u0001 in the text)
    # plus the fixed fields: an upper bound of encoded_size, charged when all fit anyway
    bounds = [13 * w + _FIXED_FIELDS for w in weights]
    if sum(bounds) <= budget.reply_left:
        return [cost if budget.take_reply(cost) else None for cost in bounds]
    return await asyncio.to_thread(run) if sum(weights) > _INLINE_TEXT else run()


_FIXED_FIELDS = 1024  # >= the encoded size of an entry's keys, numbers and punctuation
_TEXT_FIELDS = ("key_name", "value", "description")


def _text_chars(entry: dict[str, Any]) -> int:
    """Characters of an entry's text fields (search entries repeat the description)."""
    n = sum(len(entry.get(f) or "") for f in _TEXT_FIELDS)
    return n + len(entry["description"] or "") if "metadata" in entry else n


def item_error(key: str, code: str, message: str) -> dict[str, Any]:
    return {"key_name": key, "status": "error", "code": code, "error": message}


def parse_items(items: object, tool: str) -> list[ItemArgs]:
    """The ``items`` argument of create_memory, type-checked item by item."""
    if items is None:
        raise bad(
            f"{tool}: missing required argument items (a list of 1-{MAX_ITEMS} objects "
            "{key_name, value, description?, base64?, embed?, embed_source?})"
        )
    if not isinstance(items, list):
        raise bad(f"{tool}: items must be a list, got {type(items).__name__}")
    if not items:
        raise bad(f"{tool}: items is empty; give 1-{MAX_ITEMS} items")
    if len(items) > MAX_ITEMS:
        raise bad(f"{tool}: {len(items)} items in one call; send at most {MAX_ITEMS} per call")
    parsed: list[ItemArgs] = []
    for i, it in enumerate(items):
        where = f"items[{i}]."
        if not isinstance(it, dict):
            raise bad(f"{tool}: items[{i}] must be an object, got {type(it).__name__}")
        key = req_str(it, "key_name", where, tool)
        value = req_str(it, "value", where, tool)
        desc = opt_str(it, "description", where)
        b64 = bool(opt_bool(it, "base64", where))
        embed = bool(opt_bool(it, "embed", where))
        parsed.append((key, value, desc, b64, embed, embed_source_arg(it, where)))
    return parsed
