"""The hub's wire protocol: Ensue's JSON-RPC 2.0 ``tools/call`` over HTTP POST.

Requests
    ``POST /`` (also ``/mcp``) with a JSON-RPC 2.0 object (or a batch array) and, for
    anything but public reads, ``Authorization: Bearer <token>``. Raw clients need no
    handshake and no ``Accept`` header. MCP streamable-HTTP clients may send
    ``initialize`` (answered with their protocolVersion when supported, else the newest
    we speak), ``notifications/*`` (HTTP 202, no body), ``tools/list`` (input schemas,
    no output schemas) and ``ping``. The hub is stateless: it issues no
    ``Mcp-Session-Id``; GET and DELETE are answered 405 (no server-initiated stream, no
    session to end). Replies are JSON, or one server-sent event (``event: message`` /
    ``data: {...}``) when the ``Accept`` header lists ``text/event-stream`` but not
    ``application/json``.

Results
    A tool's result is in ``result.structuredContent`` and, as a JSON string, in
    ``result.content[0].text``. A tool that fails as a whole (``update_memory`` of a
    missing key, a forbidden ``share``) answers ``result.isError: true`` with a plain
    message in ``content[0].text`` and ``structuredContent`` = ``{"error": message,
    "code": CODE, "key_name"?: key}``.

Per-item results (create_memory, get_memory, delete_memory)
    ``{"key_name": <as sent>, "status": "success", ...}`` or
    ``{"key_name": <as sent>, "status": "error", "code": CODE, "error": message}`` with
    CODE one of ``already_exists``, ``not_found``, ``forbidden``, ``invalid``, and
    ``too_large`` (get_memory: the value does not fit in what is left of the request's
    reply limit; get it in a request of its own).

Tool results
    create_memory   ``{"results": [{key_name, status, created_at, updated_at} ...],
                    "created": n, "failed": n}``
    get_memory      ``{"results": [{key_name, status, value, description, created_at,
                    updated_at, embedded, size} ...]}``. ``value`` is the stored text: a
                    value written with ``base64: true`` is decoded on write and comes back
                    as text (what the original clients expect: they ``json.loads`` it).
    update_memory   ``{key_name, status: "success", created_at, updated_at}``
    delete_memory   ``{"results": [{key_name, status} ...], "deleted": n, "failed": n}``
    list_keys       ``{"keys": [{key_name, description, size, created_at, updated_at}],
                    "count", "offset", "limit", "has_more"}``; ``prefix`` is an SQL LIKE
                    pattern (``%``/``_`` wildcards, ``\\`` escapes, ``%`` implied at the
                    end, case-sensitive); ``limit`` above 100 is clamped to 100.
    search_memories ``{"results": [{key_name, score, value, description, created_at,
                    updated_at, metadata: {description, created_at, updated_at}}]}``,
                    cosine ``score`` (higher is closer), only embedded items; ``prefix`` as
                    in list_keys.
    create_invite   ``{"token": "inv_...", "invite_id", "role", "max_uses", "expires_at",
                    ...}`` (admin); ``role`` read|participant, ``max_uses`` 1-1000
                    (default 1), ``expires_in_s`` 60 s-90 days (default 7 days)
    claim_invite    ``{"status": "success", "org", "role", "name", "api_key"?}``; with a
                    token it upgrades that token's role, without one it makes a new token
                    and returns it once as ``api_key``.
    share           ``{"command": {"command": C, ...}}`` (admin) with C one of
                    ``grant``/``revoke`` (``target: {"type": "group", "group_name"}``,
                    ``action``: read|create|update|delete, ``key_pattern``),
                    ``make_public``/``make_private`` (``key_pattern``), ``create_group``,
                    ``set_external_group`` (``group_name``: read or participant),
                    ``revoke_invite`` (``invite_id``), ``list_invites``, ``list``.
                    Groups are the roles.

Keys come back as sent in per-item results, and in one form in listings and searches:
bare for the hub's org, ``@org/key`` for any other org.

Errors
    -32700 body is not JSON (or not UTF-8), -32600 not a JSON-RPC request (HTTP 400 for
    both), -32601 unknown method, -32602 unknown tool or bad arguments (missing, wrong
    type, more than 100 items, an integer out of range), -32001 no or bad token (HTTP
    401), -32003 the token's role may not use this tool (HTTP 403), -32603 a fault of the
    hub (HTTP 500, logged). Limits (``swarm.hub.limits``): a body too large is HTTP 413,
    a batch too long HTTP 400, a body too slow HTTP 408, an unsupported
    ``Content-Encoding`` HTTP 415; more items than a request may carry is -32602.
    Content problems of one item (bad key, invalid base64 or UTF-8, value over the cap,
    a key that exists or is missing) are per-item errors, never a half-written item.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ERR_FORBIDDEN",
    "ERR_INTERNAL",
    "ERR_INVALID_PARAMS",
    "ERR_INVALID_REQUEST",
    "ERR_METHOD_NOT_FOUND",
    "ERR_PARSE",
    "ERR_UNAUTHORIZED",
    "MAX_ITEMS",
    "MAX_PAGE",
    "PROTOCOL_VERSIONS",
    "TOOLS",
    "RpcError",
]

ERR_PARSE = -32700
ERR_INVALID_REQUEST = -32600
ERR_METHOD_NOT_FOUND = -32601
ERR_INVALID_PARAMS = -32602
ERR_INTERNAL = -32603
ERR_UNAUTHORIZED = -32001
ERR_FORBIDDEN = -32003

MAX_ITEMS = 100
MAX_PAGE = 100
PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")


class RpcError(Exception):
    """A JSON-RPC error reply (``code``, ``message``) with the HTTP status to send."""

    def __init__(self, code: int, message: str, *, http_status: int = 200) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status


class ToolFailure(Exception):
    """A tool that failed as a whole: an ``isError`` result."""

    def __init__(self, code: str, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.key = key

    def structured(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message, "code": self.code}
        if self.key is not None:
            out["key_name"] = self.key
        return out


_KEY = {"type": "string", "description": "Key, or '@org/key' for another org"}
_EMBED_SOURCE = {
    "type": "string",
    "enum": ["description", "value"],
    "description": "Text to embed for semantic search (default: description)",
}

TOOLS: list[dict[str, Any]] = [
    {
        "name": "create_memory",
        "description": "Create items; each fails on its own if its key already exists.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "items": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_ITEMS,
                    "items": {
                        "type": "object",
                        "properties": {
                            "key_name": _KEY,
                            "value": {"type": "string"},
                            "description": {"type": "string"},
                            "base64": {
                                "type": "boolean",
                                "description": "value is base64 of UTF-8 text",
                            },
                            "embed": {"type": "boolean"},
                            "embed_source": _EMBED_SOURCE,
                        },
                        "required": ["key_name", "value"],
                    },
                }
            },
            "required": ["items"],
        },
    },
    {
        "name": "get_memory",
        "description": "Read items by key.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "key_names": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_ITEMS,
                    "items": {"type": "string"},
                }
            },
            "required": ["key_names"],
        },
    },
    {
        "name": "update_memory",
        "description": "Replace the value of an existing key.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "key_name": _KEY,
                "value": {"type": "string"},
                "description": {"type": "string"},
                "base64": {"type": "boolean"},
                "embed": {"type": "boolean"},
                "embed_source": _EMBED_SOURCE,
            },
            "required": ["key_name", "value"],
        },
    },
    {
        "name": "delete_memory",
        "description": "Delete items by key.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "key_names": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_ITEMS,
                    "items": {"type": "string"},
                }
            },
            "required": ["key_names"],
        },
    },
    {
        "name": "list_keys",
        "description": "List keys under a prefix (SQL LIKE pattern; escape \\ % _), sorted by key.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "prefix": {"type": "string"},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                "offset": {"type": "integer", "minimum": 0, "maximum": 2**31},
            },
        },
    },
    {
        "name": "search_memories",
        "description": "Semantic search over embedded items (cosine score, higher is closer).",
        "inputSchema": {
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                "prefix": {"type": "string"},
            },
            "required": ["query"],
        },
    },
    {
        "name": "create_invite",
        "description": "Make an invite token that gives its claimer the participant role (admin).",
        "inputSchema": {
            "type": "object",
            "properties": {
                "auto_approve": {"type": "boolean"},
                "role": {"type": "string", "enum": ["read", "participant"]},
                "max_uses": {"type": "integer", "minimum": 1, "maximum": 1000},
                "expires_in_s": {"type": "integer", "minimum": 60, "maximum": 7776000},
            },
        },
    },
    {
        "name": "claim_invite",
        "description": "Join with an invite token.",
        "inputSchema": {
            "type": "object",
            "properties": {"token": {"type": "string"}},
            "required": ["token"],
        },
    },
    {
        "name": "share",
        "description": "Org setup: grant/revoke, make_public/make_private, groups (admin).",
        "inputSchema": {
            "type": "object",
            "properties": {"command": {"type": "object"}},
            "required": ["command"],
        },
    },
]

TOOL_NAMES = tuple(t["name"] for t in TOOLS)
