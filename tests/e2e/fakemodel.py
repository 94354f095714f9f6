"""A fake model server for end-to-end tests with the real agent CLIs.

It listens on 127.0.0.1 (port 0: the OS picks a free port) and speaks just enough of
three APIs for a CLI to run real turns against it:

- Anthropic Messages (``POST /v1/messages``, SSE when ``stream`` is true): Claude Code;
- Gemini (``POST /v1beta/models/M:streamGenerateContent?alt=sse`` and ``:generateContent``):
  Gemini CLI;
- OpenAI Responses (``POST /v1/responses``, SSE) and Chat Completions
  (``POST /v1/chat/completions``, SSE): Codex, opencode, Copilot CLI.

Every request is recorded (:attr:`FakeModel.requests`). What the "model" answers is
decided by a *brain*: a function that gets the request, normalised
(:class:`ModelRequest`), and returns a :class:`Reply` (text, or calls of tools by
their short name such as ``send``; the server finds the full name the CLI offered,
e.g. ``mcp__pipemesh__send``, ``mcp_pipemesh_send`` or the ``mcp__pipemesh`` namespace).

Example::

    def brain(req: ModelRequest) -> Reply:
        if req.has_tool("send") and not req.tool_results:
            return Reply.call("send", to="bob", text="hello")
        return Reply.say("done")

    with FakeModel(brain) as model:
        env = {"ANTHROPIC_BASE_URL": model.url, ...}
        ...
        first = model.wait_for(lambda r: "hello" in r.text, timeout_s=60)

Side requests that are not turns (Gemini's JSON-mode routing calls that expect an
object matching a schema, token counts, model lists) are answered here and never reach
the brain. Test-only code: stdlib only, loopback only.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["Call", "FakeModel", "ModelRequest", "Reply", "needs_pipemesh", "scripted"]


@dataclass(frozen=True)
class Call:
    """One tool call: the tool's short name (``send``) and its arguments."""

    tool: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Reply:
    """What the model answers: some text, then zero or more tool calls."""

    text: str = ""
    calls: tuple[Call, ...] = ()

    @classmethod
    def say(cls, text: str) -> Reply:
        """A plain text answer that ends the turn."""
        return cls(text=text)

    @classmethod
    def call(cls, tool: str, **args: Any) -> Reply:
        """One call of tool ``tool`` (short name, e.g. ``send`` or ``inbox``)."""
        return cls(calls=(Call(tool, args),))


@dataclass
class ModelRequest:
    """One request as the server saw it, with the parts tests look at pulled out.

    Attributes:
        api: ``anthropic``, ``gemini``, ``responses`` or ``chat``.
        path: the URL path and query.
        body: the parsed JSON body.
        at: ``time.monotonic()`` when the request arrived.
        tools: every tool name offered (namespaced Codex tools as ``ns.name``).
        schemas: the input schema of each tool, by name (Anthropic requests only).
        text: all text of the conversation (system, user, tool results, assistant) joined.
        tool_results: the text of every tool result in the conversation, oldest first.
        is_turn: False for side requests the server answers itself.
    """

    api: str
    path: str
    body: dict[str, Any]
    at: float
    tools: list[str] = field(default_factory=list)
    schemas: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    tool_results: list[str] = field(default_factory=list)
    is_turn: bool = True

    def tool_name(self, short: str) -> str | None:
        """The full name of pipemesh's tool ``short`` as this CLI offered it, or None."""
        for name in self.tools:
            # mcp__pipemesh__send, mcp_pipemesh_send, mcp__pipemesh.send, pipemesh-send, ...
            if "pipemesh" in name and re.split(r"[_.\-]", name)[-1] == short:
                return name
        for name in self.tools:
            if name == short:
                return name
        return None

    def has_tool(self, short: str) -> bool:
        """True when pipemesh's tool ``short`` is offered to the model."""
        return self.tool_name(short) is not None

    @property
    def last_text(self) -> str:
        """The last user-side text (prompt, hook context or tool result)."""
        return self._last_user_text()

    def _last_user_text(self) -> str:
        msgs = _messages(self)
        return msgs[-1] if msgs else ""


Brain = Callable[[ModelRequest], Reply]

# Claude Code offers this tool while MCP servers are still starting.
WAIT_FOR_MCP = "WaitForMcpServers"
# A scripted turn makes a few tool calls; past this many, a brain that loops is cut off.
MAX_TOOL_RESULTS = 8


def needs_pipemesh(brain: Brain) -> Brain:
    """``brain``, but only once pipemesh's tools are offered: before that, a request that
    offers Claude Code's WaitForMcpServers calls it (the server is still starting), and
    any other says so and ends the turn. A turn with more than MAX_TOOL_RESULTS tool
    results is ended (a brain that never stops calling tools must not hang a test)."""

    def wrapped(req: ModelRequest) -> Reply:
        if len(req.tool_results) > MAX_TOOL_RESULTS:
            return Reply.say(f"stopping after {MAX_TOOL_RESULTS} tool calls")
        if req.has_tool("send"):
            return brain(req)
        if WAIT_FOR_MCP in req.tools:
            args = _example(req.schemas.get(WAIT_FOR_MCP, {}))
            return Reply(calls=(Call(WAIT_FOR_MCP, args if isinstance(args, dict) else {}),))
        return Reply.say("no pipemesh tools")

    return wrapped


def scripted(*replies: Reply, then: Reply | None = None) -> Brain:
    """A brain that gives ``replies`` one per turn request, then ``then`` (default "done")."""
    queue = list(replies)
    lock = threading.Lock()
    final = then or Reply.say("done")

    def brain(req: ModelRequest) -> Reply:
        with lock:
            return queue.pop(0) if queue else final

    return brain


# --- request parsing ------------------------------------------------------------------


_TEXT_KEYS = frozenset(
    {"text", "content", "output", "parts", "input", "response", "result", "functionResponse"}
    | {"system", "systemInstruction", "instructions"}
)


def _texts(value: Any) -> Iterator[str]:
    """Every string under the keys that hold conversation text, depth first."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key in _TEXT_KEYS:
                yield from _texts(item)


def _messages(req: ModelRequest) -> list[str]:
    body = req.body
    if req.api == "anthropic":
        return ["\n".join(_texts(m.get("content"))) for m in body.get("messages", [])]
    if req.api == "gemini":
        return ["\n".join(_texts(c.get("parts"))) for c in body.get("contents", [])]
    if req.api == "responses":
        items = body.get("input", [])
        if isinstance(items, str):
            return [items]
        return ["\n".join(_texts(i)) for i in items if isinstance(i, dict)]
    return ["\n".join(_texts(m.get("content"))) for m in body.get("messages", [])]


def _parse(api: str, path: str, body: dict[str, Any]) -> ModelRequest:
    req = ModelRequest(api=api, path=path, body=body, at=time.monotonic())
    tools: list[str] = []
    results: list[str] = []
    if api == "anthropic":
        tools = [t.get("name", "") for t in body.get("tools", []) if isinstance(t, dict)]
        req.schemas = {
            t.get("name", ""): t.get("input_schema", {})
            for t in body.get("tools", [])
            if isinstance(t, dict)
        }
        for m in body.get("messages", []):
            content = m.get("content")
            if isinstance(content, list):
                for block in content:
                    if isinstance(block, dict) and block.get("type") == "tool_result":
                        results.append("\n".join(_texts(block.get("content"))))
        system = "\n".join(_texts(body.get("system")))
    elif api == "gemini":
        for t in body.get("tools", []):
            for d in t.get("functionDeclarations", []) if isinstance(t, dict) else []:
                tools.append(d.get("name", ""))
        for c in body.get("contents", []):
            for part in c.get("parts", []):
                if isinstance(part, dict) and "functionResponse" in part:
                    results.append(json.dumps(part["functionResponse"].get("response")))
        system = "\n".join(_texts(body.get("systemInstruction")))
    elif api == "responses":
        for t in body.get("tools", []):
            if not isinstance(t, dict):
                continue
            if t.get("type") == "namespace":
                tools += [f"{t.get('name')}.{s.get('name')}" for s in t.get("tools", [])]
            else:
                tools.append(t.get("name", ""))
        items = body.get("input", [])
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and item.get("type") == "function_call_output":
                out = item.get("output")
                results.append(out if isinstance(out, str) else json.dumps(out))
        system = str(body.get("instructions", ""))
    else:
        for t in body.get("tools", []):
            fn = t.get("function", {}) if isinstance(t, dict) else {}
            tools.append(fn.get("name", ""))
        for m in body.get("messages", []):
            if m.get("role") == "tool":
                results.append("\n".join(_texts(m.get("content"))))
        system = ""
    req.tools = tools
    req.tool_results = results
    req.text = "\n".join([system, *_messages(req)])
    return req


def _example(schema: Any) -> Any:
    """A small value that matches a JSON schema (for JSON-mode side requests)."""
    if not isinstance(schema, dict):
        return {}
    if schema.get("enum"):
        return schema["enum"][0]
    kind = str(schema.get("type", "object")).lower()
    if kind == "object":
        props = schema.get("properties", {})
        return {k: _example(v) for k, v in props.items()}
    if kind == "array":
        items = schema.get("items", {})
        return ["pipemesh"] if isinstance(items, dict) and items.get("type") == "string" else []
    if kind in ("integer", "number"):
        return 0
    if kind == "boolean":
        return False
    return "ok"


# --- responses ------------------------------------------------------------------------


def _sse(event: str | None, data: dict[str, Any]) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


class _Ids:
    def __init__(self) -> None:
        self._n = 0
        self._lock = threading.Lock()

    def next(self, prefix: str) -> str:
        with self._lock:
            self._n += 1
            return f"{prefix}{self._n:06d}"


def _anthropic(req: ModelRequest, reply: Reply, ids: _Ids) -> tuple[list[bytes], dict[str, Any]]:
    model = req.body.get("model", "claude-fake")
    blocks: list[dict[str, Any]] = []
    if reply.text or not reply.calls:
        blocks.append({"type": "text", "text": reply.text or "ok"})
    for call in reply.calls:
        name = req.tool_name(call.tool) or call.tool
        blocks.append(
            {"type": "tool_use", "id": ids.next("toolu_"), "name": name, "input": call.args}
        )
    stop = "tool_use" if reply.calls else "end_turn"
    usage = {"input_tokens": 10, "output_tokens": 5}
    message = {
        "id": ids.next("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }
    events = [
        _sse(
            "message_start",
            {"type": "message_start", "message": {**message, "content": [], "stop_reason": None}},
        )
    ]
    for i, block in enumerate(blocks):
        if block["type"] == "text":
            start = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            start = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        events.append(
            _sse(
                "content_block_start",
                {"type": "content_block_start", "index": i, "content_block": start},
            )
        )
        events.append(
            _sse("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta})
        )
        events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": i}))
    events.append(
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 5},
            },
        )
    )
    events.append(_sse("message_stop", {"type": "message_stop"}))
    return events, message


def _gemini(req: ModelRequest, reply: Reply) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if reply.text or not reply.calls:
        parts.append({"text": reply.text or "ok"})
    for call in reply.calls:
        parts.append(
            {"functionCall": {"name": req.tool_name(call.tool) or call.tool, "args": call.args}}
        )
    return {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
        ],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15},
        "modelVersion": req.path.split("/models/")[-1].split(":")[0] or "gemini-fake",
    }


def _responses(req: ModelRequest, reply: Reply, ids: _Ids) -> list[bytes]:
    resp_id = ids.next("resp_")
    model = req.body.get("model", "gpt-fake")
    items: list[dict[str, Any]] = []
    if reply.text or not reply.calls:
        items.append(
            {
                "type": "message",
                "id": ids.next("msg_"),
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": reply.text or "ok", "annotations": []}],
            }
        )
    for call in reply.calls:
        full = req.tool_name(call.tool) or call.tool
        item: dict[str, Any] = {
            "type": "function_call",
            "id": ids.next("fc_"),
            "call_id": ids.next("call_"),
            "arguments": json.dumps(call.args),
            "status": "completed",
        }
        if "." in full:  # a Codex namespace: mcp__pipemesh.send
            item["namespace"], item["name"] = full.split(".", 1)
        else:
            item["name"] = full
        items.append(item)
    base = {"id": resp_id, "object": "response", "created_at": int(time.time()), "model": model}
    events = [
        _sse(
            "response.created",
            {
                "type": "response.created",
                "response": {**base, "status": "in_progress", "output": []},
            },
        ),
    ]
    for i, item in enumerate(items):
        events.append(
            _sse(
                "response.output_item.added",
                {"type": "response.output_item.added", "output_index": i, "item": item},
            )
        )
        if item["type"] == "message":
            text = item["content"][0]["text"]
            events.append(
                _sse(
                    "response.output_text.delta",
                    {
                        "type": "response.output_text.delta",
                        "item_id": item["id"],
                        "output_index": i,
                        "content_index": 0,
                        "delta": text,
                    },
                )
            )
        events.append(
            _sse(
                "response.output_item.done",
                {"type": "response.output_item.done", "output_index": i, "item": item},
            )
        )
    usage = {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 15,
    }
    done = {**base, "status": "completed", "output": items, "usage": usage}
    events.append(_sse("response.completed", {"type": "response.completed", "response": done}))
    return events


def _chat(req: ModelRequest, reply: Reply, ids: _Ids) -> list[bytes]:
    chat_id = ids.next("chatcmpl-")
    model = req.body.get("model", "gpt-fake")

    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        return _sse(
            None,
            {
                "id": chat_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            },
        )

    out = [chunk({"role": "assistant", "content": ""}, None)]
    if reply.text or not reply.calls:
        out.append(chunk({"content": reply.text or "ok"}, None))
    for i, call in enumerate(reply.calls):
        fn = {"name": req.tool_name(call.tool) or call.tool, "arguments": json.dumps(call.args)}
        tc = {"index": i, "id": ids.next("call_"), "type": "function", "function": fn}
        out.append(chunk({"tool_calls": [tc]}, None))
    out.append(chunk({}, "tool_calls" if reply.calls else "stop"))
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    out.append(
        _sse(
            None,
            {
                "id": chat_id,
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [],
                "usage": usage,
            },
        )
    )
    out.append(b"data: [DONE]\n\n")
    return out


# --- the server -----------------------------------------------------------------------


class FakeModel:
    """The server: start it (or use it as a context manager), point a CLI at :attr:`url`.

    Args:
        brain: decides every turn's answer; replace it any time with :attr:`brain`.
    """

    def __init__(self, brain: Brain | None = None) -> None:
        self.brain: Brain = brain or (lambda req: Reply.say("done"))
        self.requests: list[ModelRequest] = []
        self.other: list[tuple[str, str]] = []  # (method, path) of requests not understood
        self.errors: list[str] = []
        self._cond = threading.Condition()
        self._ids = _Ids()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> FakeModel:
        """Listen on 127.0.0.1 with a free port, serving from a daemon thread."""
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                model._get(self)

            def do_POST(self) -> None:
                model._post(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fakemodel", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving; idempotent."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the server first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    # inspection

    def turns(self) -> list[ModelRequest]:
        """The turn requests so far (side requests left out)."""
        with self._cond:
            return [r for r in self.requests if r.is_turn]

    def wait_for(
        self, pred: Callable[[ModelRequest], object], timeout_s: float = 60.0, *, after: int = 0
    ) -> ModelRequest | None:
        """The first turn request (from index ``after`` of :attr:`requests`) matching
        ``pred``, waiting up to ``timeout_s`` for it; None at the deadline."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for req in self.requests[after:]:
                    if req.is_turn and pred(req):
                        return req
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def count(self) -> int:
        """How many requests were recorded (use as ``after`` in :meth:`wait_for`)."""
        with self._cond:
            return len(self.requests)

    # handlers

    def _record(self, req: ModelRequest) -> None:
        with self._cond:
            self.requests.append(req)
            self._cond.notify_all()

    def _get(self, h: BaseHTTPRequestHandler) -> None:
        path = urlsplit(h.path).path
        with self._cond:
            self.other.append(("GET", h.path))
        if path.endswith("/models"):
            self._json(h, {"object": "list", "data": [], "models": []})
        else:
            self._json(h, {"error": {"message": f"fakemodel: no GET {path}"}}, 404)

    def _post(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        if h.headers.get("Content-Encoding", "") == "gzip":
            import gzip

            raw = gzip.decompress(raw)
        elif h.headers.get("Content-Encoding", "") == "zstd":
            self._json(h, {"error": {"message": "fakemodel: zstd bodies not supported"}}, 415)
            return
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        split = urlsplit(h.path)
        path = split.path
        try:
            if path.endswith("/messages/count_tokens"):
                self._json(h, {"input_tokens": 10})
            elif path.endswith("/messages"):
                self._serve_anthropic(h, body)
            elif ":countTokens" in path:
                self._json(h, {"totalTokens": 10})
            elif ":streamGenerateContent" in path or ":generateContent" in path:
                stream = ":streamGenerateContent" in path
                sse = parse_qs(split.query).get("alt") == ["sse"]
                self._serve_gemini(h, h.path, body, stream, sse)
            elif path.endswith("/responses"):
                self._serve_responses(h, body)
            elif path.endswith("/chat/completions"):
                self._serve_chat(h, body)
            else:
                with self._cond:
                    self.other.append(("POST", h.path))
                self._json(h, {"error": {"message": f"fakemodel: no POST {path}"}}, 404)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _think(self, req: ModelRequest) -> Reply:
        self._record(req)
        try:
            return self.brain(req)
        except Exception as exc:  # a test's brain failed: say so in the answer and the log
            self.errors.append(f"brain failed: {exc!r}")
            return Reply.say(f"fakemodel brain failed: {exc!r}")

    def _serve_anthropic(self, h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        req = _parse("anthropic", h.path, body)
        reply = self._think(req)
        events, message = _anthropic(req, reply, self._ids)
        if body.get("stream"):
            self._stream(h, events)
        else:
            self._json(h, message)

    def _serve_gemini(
        self, h: BaseHTTPRequestHandler, path: str, body: dict[str, Any], stream: bool, sse: bool
    ) -> None:
        req = _parse("gemini", path, body)
        config = body.get("generationConfig", {}) or {}
        schema = config.get("responseJsonSchema") or config.get("responseSchema")
        if schema is not None or config.get("responseMimeType") == "application/json":
            # A JSON-mode side request (routing, next-speaker checks): not a turn.
            req.is_turn = False
            self._record(req)
            reply = Reply.say(json.dumps(_example(schema)))
        else:
            reply = self._think(req)
        data = _gemini(req, reply)
        if stream and sse:
            self._stream(h, [_sse(None, data)])
        elif stream:
            self._json(h, [data])
        else:
            self._json(h, data)

    def _serve_responses(self, h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        req = _parse("responses", h.path, body)
        self._stream(h, _responses(req, self._think(req), self._ids))

    def _serve_chat(self, h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        req = _parse("chat", h.path, body)
        reply = self._think(req)
        if body.get("stream"):
            self._stream(h, _chat(req, reply, self._ids))
            return
        msg: dict[str, Any] = {"role": "assistant", "content": reply.text or "ok"}
        if reply.calls:
            msg["tool_calls"] = [
                {
                    "id": self._ids.next("call_"),
                    "type": "function",
                    "function": {
                        "name": req.tool_name(c.tool) or c.tool,
                        "arguments": json.dumps(c.args),
                    },
                }
                for c in reply.calls
            ]
        self._json(
            h,
            {
                "id": self._ids.next("chatcmpl-"),
                "object": "chat.completion",
                "model": body.get("model", "gpt-fake"),
                "choices": [
                    {
                        "index": 0,
                        "message": msg,
                        "finish_reason": "tool_calls" if reply.calls else "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            },
        )

    @staticmethod
    def _json(h: BaseHTTPRequestHandler, data: Any, status: int = 200) -> None:
        raw = json.dumps(data).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(raw)))
        h.end_headers()
        h.wfile.write(raw)

    @staticmethod
    def _stream(h: BaseHTTPRequestHandler, events: list[bytes]) -> None:
        raw = b"".join(events)
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Content-Length", str(len(raw)))
        h.end_headers()
        h.wfile.write(raw)
        h.wfile.flush()
