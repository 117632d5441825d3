"""The wire format: JSON-RPC 2.0 ``tools/call`` requests and their answers.

An answer is plain JSON or server-sent events (``data: {...}`` lines); the tool's result is
``result.structuredContent`` or, as text, ``result.content[0].text``. Failures named by a
reply become ``swarm.errors`` here: bad JSON and wrong shapes -> ``ProtocolError``,
``result.isError`` -> ``ToolError`` (``KeyExistsError``/``KeyNotFoundError`` when the
message or code says so). Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from swarm.errors import (
    KeyExistsError,
    KeyNotFoundError,
    MemoryStoreError,
    ProtocolError,
    ToolError,
)


def encode_request(tool: str, arguments: Mapping[str, Any], request_id: int) -> bytes:
    """The body of one ``tools/call`` request."""
    return orjson.dumps(
        {
            "jsonrpc": "2.0",
            "method": "tools/call",
            "params": {"name": tool, "arguments": arguments},
            "id": request_id,
        }
    )


def like_escape(prefix: str) -> str:
    r"""Escape SQL LIKE wildcards (``\``, ``%``, ``_``) so ``prefix`` matches literally."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def epoch(value: object) -> float:
    """Timestamps arrive as epoch seconds (int/float/numeric string), ms, or ISO text."""
    if value is None or isinstance(value, bool):
        return 0.0
    if isinstance(value, int | float):
        v = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return 0.0
        try:
            v = float(text)
        except ValueError:
            try:
                dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                return 0.0
            return dt.timestamp()
    else:
        return 0.0
    if not math.isfinite(v):
        return 0.0
    return v / 1000.0 if v > 1e11 else v  # milliseconds -> seconds


def lower(value: object) -> str:
    return str(value or "").strip().lower()


def says_missing(text: str) -> bool:
    t = text.lower()
    return any(
        s in t
        for s in ("not found", "not exist", "doesn't exist", "no such", "missing", "unknown key")
    )


def says_exists(text: str) -> bool:
    t = text.lower()
    if says_missing(t):
        return False
    return any(s in t for s in ("already", "exists", "duplicate", "conflict"))


def item_ok(item: Mapping[str, Any]) -> bool:
    status = lower(item.get("status"))
    if status:
        return status in ("success", "ok", "created", "updated", "deleted")
    return not item.get("error")


def item_error(item: Mapping[str, Any]) -> str:
    err = item.get("error") or item.get("message") or item.get("status") or "failed"
    return str(err)


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    raw = headers.get("Retry-After")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        from email.utils import parsedate_to_datetime

        return max(0.0, parsedate_to_datetime(raw).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def parse_sse(text: str) -> list[Any]:
    """All JSON payloads of the ``data:`` events of a server-sent-event stream."""
    events: list[Any] = []
    data: list[str] = []

    def flush() -> None:
        if data:
            payload = "\n".join(data)
            data.clear()
            try:
                events.append(orjson.loads(payload))
            except orjson.JSONDecodeError:
                pass  # a non-JSON event (keep-alive text) is not ours

    for line in text.splitlines():
        if not line.strip():
            flush()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        # event:, id:, retry: and comments (":...") carry nothing we need
    flush()
    return events


def pick_response(payloads: Sequence[Any], request_id: int) -> dict[str, Any]:
    candidates = [p for p in payloads if isinstance(p, dict)]
    for p in candidates:
        if p.get("id") == request_id and ("result" in p or "error" in p):
            return p
    for p in candidates:  # servers that drop or rewrite the id
        if p.get("id") is None and ("result" in p or "error" in p):
            return p
    raise ProtocolError(f"no JSON-RPC response with id {request_id} in the reply")


def decode_body(body: bytes, content_type: str, request_id: int) -> dict[str, Any]:
    text_start = body.lstrip()[:6]
    if "text/event-stream" in content_type or text_start.startswith((b"data:", b"event:", b":")):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"event stream is not UTF-8: {exc}") from exc
        return pick_response(parse_sse(text), request_id)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        snippet = body[:200].decode("utf-8", "replace")
        raise ProtocolError(f"reply is not JSON ({exc}): {snippet!r}") from exc
    return pick_response(doc if isinstance(doc, list) else [doc], request_id)


def result_payload(tool: str, result: Any, key: str | None) -> Any:
    """The tool's data: ``structuredContent``, else ``content[0].text`` parsed as JSON."""
    if not isinstance(result, dict):
        raise ProtocolError(f"{tool}: result is not an object: {result!r:.200}")
    content = result.get("content")
    text = ""
    if isinstance(content, list):
        text = " ".join(
            str(c.get("text", "")) for c in content if isinstance(c, dict) and c.get("text")
        )
    if result.get("isError"):
        sc = result.get("structuredContent")
        code = sc.get("code") if isinstance(sc, dict) else None
        if not text and isinstance(sc, dict):
            text = str(sc.get("error") or "")
        raise tool_error(tool, text or "tool reported an error", key, code)
    structured = result.get("structuredContent")
    if structured is not None:
        return structured
    if isinstance(content, list):
        for c in content:
            if isinstance(c, dict) and isinstance(c.get("text"), str):
                try:
                    return orjson.loads(c["text"])
                except orjson.JSONDecodeError:
                    continue
    raise ProtocolError(f"{tool}: result has neither structuredContent nor JSON text content")


EXISTS_CODES = ("exists", "already_exists", "conflict", "duplicate")
MISSING_CODES = ("not_found", "missing", "no_such_key")


def tool_error(tool: str, message: str, key: str | None, code: object = None) -> ToolError:
    msg = f"{tool}: {message}"
    c = lower(code)
    if c in EXISTS_CODES or (not c and says_exists(message)):
        return KeyExistsError(msg, key=key)
    if c in MISSING_CODES or (not c and says_missing(message)):
        return KeyNotFoundError(msg, key=key)
    return ToolError(msg, key=key)


def row_code(row: Mapping[str, Any]) -> str:
    """A per-item failure's machine code (``code``, else a non-generic ``status``)."""
    code = lower(row.get("code"))
    if code:
        return code
    status = lower(row.get("status"))
    return "" if status in ("error", "failed", "failure") else status


def row_exists(row: Mapping[str, Any]) -> bool:
    code = row_code(row)
    return code in EXISTS_CODES if code else says_exists(item_error(row))


def row_missing(row: Mapping[str, Any]) -> bool:
    code = row_code(row)
    return code in MISSING_CODES if code else says_missing(item_error(row))


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, MemoryStoreError) and exc.retryable


def results_list(tool: str, payload: Any, field: str = "results") -> list[dict[str, Any]]:
    """The rows of a tool's answer (a list, or an object's ``field``); non-objects dropped."""
    rows: Any
    if isinstance(payload, list):
        rows = payload
    elif isinstance(payload, dict):
        rows = payload.get(field)
        if rows is None:
            rows = []
    else:
        raise ProtocolError(f"{tool}: expected an object with {field!r}, got {payload!r:.200}")
    if not isinstance(rows, list):
        raise ProtocolError(f"{tool}: {field!r} is not a list")
    return [r for r in rows if isinstance(r, dict)]


def decode_value(key: str, row: Mapping[str, Any]) -> str:
    """An item's value as text (base64 decoded when the row says so)."""
    value = row.get("value")
    if value is None:
        return ""
    if not isinstance(value, str):
        return orjson.dumps(value).decode()  # a server that hands back parsed JSON
    if row.get("base64") is True or lower(row.get("encoding")) == "base64":
        try:
            return base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ProtocolError(f"value of {key!r} is flagged base64 but is not: {exc}") from exc
    return value


def rpc_error(tool: str, error: Any) -> ProtocolError:
    """The exception for a JSON-RPC ``error`` member."""
    if isinstance(error, dict):
        code = error.get("code")
        message = error.get("message") or "JSON-RPC error"
        data = error.get("data")
        detail = f" ({data})" if data else ""
        return ProtocolError(
            f"{tool}: {message}{detail}", code=code if isinstance(code, int) else None
        )
    return ProtocolError(f"{tool}: JSON-RPC error {error!r:.200}")
