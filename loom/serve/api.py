"""`loom serve`: an OpenAI-compatible HTTP API over a trained run, with a chat page at `/`.

FastAPI and uvicorn serve it; streams are server-sent events through sse-starlette. Routes:
`GET /v1/models`, `POST /v1/chat/completions` and `POST /v1/completions` (streaming or not;
`max_tokens`, `temperature`, `top_p`, `stop`, `seed`, `usage`, `finish_reason` as OpenAI defines
them), `POST /v1/feedback` (a thumbs up or down on an answer, with a comment), `GET /health`, the
OpenAPI schema at `/openapi.json`, and the web page at `/`.

Every request is decoded by the continuous-batching `Engine`, so concurrent requests share each
forward pass. Bad input is answered with a 4xx in OpenAI's error shape,
`{"error": {"message", "type", "param", "code"}}`: malformed JSON, wrong types, missing fields,
unknown models, too many messages or characters, bodies over the limit (413), `max_tokens` past
the context, and a full queue (429). A client that disconnects stops its generation. Streams
never split a UTF-8 character (`decode_stream` holds back a piece until its character is whole)
and never show a stop string (text that could begin one is held back until it cannot).

When a `Store` is given, every answer is committed to it before its last chunk is sent.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException

from loom.chat import END_OF_TURN, parse_messages, render
from loom.config import SampleConfig
from loom.errors import DataError
from loom.serve.engine import Engine, QueueFull
from loom.serve.engine import Request as Generation
from loom.serve.store import Store
from loom.tokenizer import Tokenizer

PAGE = Path(__file__).with_name("static") / "index.html"


@dataclass
class ServeLimits:
    max_body_bytes: int = 1 << 20  # 413 beyond this
    max_messages: int = 256
    max_chars: int = 100_000  # characters of all messages (or of a prompt) together


@dataclass
class ServeSettings:
    model_name: str
    sampling: SampleConfig = field(default_factory=SampleConfig)  # defaults for fields a request leaves out
    limits: ServeLimits = field(default_factory=ServeLimits)
    api_key: str | None = None  # required as `Authorization: Bearer KEY` on /v1 when set
    cors_origins: list[str] = field(default_factory=list)  # none: no CORS headers at all


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(body, status_code=self.status, headers=headers)


# ---------------------------------------------------------------------------------------------
# Request bodies (the fields loom reads; others an OpenAI client may send are ignored)
# ---------------------------------------------------------------------------------------------

Temperature = Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)]
TopP = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
Seed = Annotated[int, Field(ge=-(2**63), le=2**64 - 1)]
Stop = str | Annotated[list[str], Field(max_length=4)]


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    name: str
    arguments: str


class ToolCallIn(BaseModel):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCallIn] | None = None
    name: str | None = None
    tool_call_id: str | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class Sampling(BaseModel):
    model: str
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    stop: Stop | None = None
    seed: Seed | None = None
    n: Annotated[int, Field(ge=1, le=1, description="only 1 is supported")] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None


class ChatCompletionRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None


class CompletionRequest(Sampling):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = 16  # OpenAI's default for completions


class FeedbackRequest(BaseModel):
    completion_id: str = Field(description="the `id` of a chat completion or completion this server wrote")
    rating: Literal["up", "down"]
    comment: Annotated[str, Field(max_length=10_000)] = ""


# ---------------------------------------------------------------------------------------------
# Text out of tokens: whole characters, stop strings held back
# ---------------------------------------------------------------------------------------------


class TextOut:
    """Turns generated ids into text pieces: a piece is held back while it ends inside a UTF-8
    character, or while its end could be the start of a stop string. `stopped` turns true
    when a stop string appeared; the text before it is the answer."""

    def __init__(self, tok: Tokenizer, stops: list[str]):
        self.tok, self.stops = tok, [s for s in stops if s]
        self.pending_ids: list[int] = []
        self.held = ""
        self.text = ""  # what has been let out
        self.stopped = False

    def add(self, token: int) -> str:
        self.pending_ids.append(token)
        piece = self.tok.decode(self.pending_ids)
        if not piece or piece.endswith("\ufffd"):
            return ""
        self.pending_ids = []
        return self._release(self.held + piece)

    def flush(self) -> str:
        rest = self.held + (self.tok.decode(self.pending_ids) if self.pending_ids else "")
        self.held, self.pending_ids = "", []
        if self.stopped:
            return ""
        return self._release(rest, final=True)

    def _release(self, text: str, final: bool = False) -> str:
        if self.stopped:
            return ""
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped, self.held = True, ""
            return self._let(text[:cut])
        keep = 0 if final else max((n for s in self.stops for n in range(1, len(s)) if text.endswith(s[:n])),
                                   default=0)
        self.held = text[len(text) - keep:] if keep else ""
        return self._let(text[: len(text) - keep])

    def _let(self, piece: str) -> str:
        self.text += piece
        return piece


# ---------------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------------


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 before the app sees it.

    The rest of an over-limit body is read and thrown away (up to `DRAIN_FACTOR` times the limit)
    before the 413 goes out: a server that answers and closes while the client is still sending
    leaves unread bytes in its socket, the kernel answers them with a reset, and the client sees
    a broken pipe instead of the 413. Past the bound the answer goes out at once; a client that
    declares a body that large gets no more of the server's time.
    """

    DRAIN_FACTOR = 8

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        declared = int(declared) if declared is not None and declared.isdigit() else None
        chunks, size, more = [], 0, True
        while more and size <= self.limit and (declared is None or declared <= self.limit):
            message = await receive()
            chunks.append(message)
            more = message["type"] == "http.request" and message.get("more_body", False)
            size += len(message.get("body", b""))
        if size <= self.limit and (declared is None or declared <= self.limit):
            async def replay():
                return chunks.pop(0) if chunks else await receive()

            return await self.app(scope, replay, send)
        chunks.clear()
        bound = self.DRAIN_FACTOR * self.limit
        while more and size <= bound and (declared is None or declared <= bound):
            message = await receive()
            more = message["type"] == "http.request" and message.get("more_body", False)
            size += len(message.get("body", b""))
        error = APIError(413, f"the request body is over the limit of {self.limit:,} bytes",
                         code="request_too_large")
        return await error.response()(scope, receive, send)


def create_app(engine: Engine, tok: Tokenizer, settings: ServeSettings, store: Store | None = None) -> FastAPI:
    app = FastAPI(title="loom", version="1", summary=f"OpenAI-compatible API for {settings.model_name}",
                  docs_url="/docs", redoc_url=None)
    context = engine.context
    limits = settings.limits
    end_ids = frozenset({tok.token_id(END_OF_TURN), tok.eos_id})

    # --- errors in OpenAI's shape -------------------------------------------------------------

    @app.exception_handler(APIError)
    async def api_error(request, e: APIError):
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e: RequestValidationError):
        errors = e.errors()
        if any(error.get("type") == "json_invalid" for error in errors):
            first = next(error for error in errors if error.get("type") == "json_invalid")
            detail = first.get("ctx", {}).get("error", first.get("msg"))
            return APIError(400, f"the body is not valid JSON: {detail}", code="invalid_json").response()
        param = field_path(errors[0].get("loc", ()))
        # A field that may take several shapes (a string or a list) fails once per shape: report
        # the shape the value had, not "should be a string" for a list that is too long.
        same = [error for error in errors if field_path(error.get("loc", ())) == param]
        first = next((error for error in same if not str(error.get("type", "")).endswith("_type")), same[0])
        detail = "is required" if first.get("type") == "missing" else first.get("msg", "invalid value")
        others = len({field_path(error.get("loc", ())) for error in errors}) - 1
        more = f" (and {others} more field{'s' if others > 1 else ''})" if others else ""
        return APIError(400, f"{param or 'body'}: {detail}{more}", param=param).response()

    @app.exception_handler(HTTPException)
    async def http_error(request, e: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
        return APIError(e.status_code, str(e.detail), code=code).response()

    @app.exception_handler(Exception)
    async def unexpected(request, e: Exception):
        return APIError(500, f"internal error: {type(e).__name__}", type="server_error").response()

    def authorized(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, key = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), settings.api_key.encode()):
            raise APIError(401, "a valid API key is required: send `Authorization: Bearer KEY`",
                           type="authentication_error", code="invalid_api_key")

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)

    # --- plain routes -------------------------------------------------------------------------

    created = int(time.time())
    in_flight: dict[str, asyncio.Event] = {}  # completions being written: set once stored
    model_card = {"id": settings.model_name, "object": "model", "created": created, "owned_by": "loom"}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": settings.model_name, "context": context, **engine.load()}

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    async def models():
        return {"object": "list", "data": [model_card]}

    @app.get("/v1/models/{model}", dependencies=[Depends(authorized)])
    async def one_model(model: str):
        check_model(model)
        return model_card

    @app.post("/v1/feedback", dependencies=[Depends(authorized)])
    async def feedback(body: FeedbackRequest):
        if store is None:
            raise APIError(409, "this server keeps no log (started with --no-log), so it takes no ratings",
                           code="logging_off")
        writing = in_flight.get(body.completion_id)
        if writing is not None:  # an answer still streaming, or stopped a moment ago: wait until it is stored
            try:
                await asyncio.wait_for(writing.wait(), timeout=10)
            except TimeoutError:
                raise APIError(409, "that answer is still being written; rate it when it has finished",
                               param="completion_id", code="completion_in_progress") from None
        if not store.has_completion(body.completion_id):
            raise APIError(404, f"no completion {body.completion_id!r} on this server", param="completion_id",
                           code="completion_not_found")
        rating_id = store.add_rating(body.completion_id, 1 if body.rating == "up" else -1, body.comment)
        return {"id": rating_id, "object": "feedback", "completion_id": body.completion_id, "rating": body.rating}

    @app.post("/v1/chat/completions", dependencies=[Depends(authorized)])
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        check_model(body.model)
        messages = chat_messages(body)
        ids = render(tok, messages, add_generation_prompt=True).ids
        max_tokens = room(len(ids), body.max_completion_tokens or body.max_tokens,
                          "max_completion_tokens" if body.max_completion_tokens else "max_tokens")
        logged = [m.model_dump(exclude_none=True) for m in body.messages]
        job = Job(body, ids, max_tokens, "chat", logged, client(request))
        if body.stream:
            return EventSourceResponse(chat_events(job), ping=15)
        await job.finish(request)
        return {"id": job.id, "object": "chat.completion", "created": job.created, "model": body.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": job.out.text},
                             "logprobs": None, "finish_reason": job.finish_reason}],
                "usage": job.usage()}

    @app.post("/v1/completions", dependencies=[Depends(authorized)])
    async def completions(body: CompletionRequest, request: Request):
        check_model(body.model)
        prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
        if len(prompt) > limits.max_chars:
            raise APIError(400, f"the prompt has {len(prompt):,} characters; the limit is {limits.max_chars:,}",
                           param="prompt", code="prompt_too_long")
        ids = [tok.bos_id] + tok.encode(checked_text(prompt, "prompt"))
        max_tokens = room(len(ids), body.max_tokens, "max_tokens")
        job = Job(body, ids, max_tokens, "text", prompt, client(request), object="text_completion")
        if body.stream:
            return EventSourceResponse(text_events(job), ping=15)
        await job.finish(request)
        return {"id": job.id, "object": "text_completion", "created": job.created, "model": body.model,
                "choices": [{"index": 0, "text": job.out.text, "logprobs": None,
                             "finish_reason": job.finish_reason}],
                "usage": job.usage()}

    # --- checks -------------------------------------------------------------------------------

    def check_model(name: str) -> None:
        if name != settings.model_name:
            raise APIError(404, f"the model {name!r} does not exist; this server serves {settings.model_name!r} "
                                "(GET /v1/models)", param="model", code="model_not_found")

    def chat_messages(body: ChatCompletionRequest):
        if len(body.messages) > limits.max_messages:
            raise APIError(400, f"{len(body.messages)} messages are more than the limit of {limits.max_messages}",
                           param="messages", code="too_many_messages")
        raw, chars = [], 0
        for i, m in enumerate(body.messages):
            text = m.content if isinstance(m.content, str) or m.content is None else "".join(
                part.text for part in m.content)
            chars += len(text or "")
            calls = [{"function": c.function.model_dump()} for c in m.tool_calls or []]
            entry = {"role": "system" if m.role == "developer" else m.role,
                     "content": checked_text(text, f"messages.{i}.content") if text is not None else None}
            if calls:
                entry["tool_calls"] = calls
            raw.append(entry)
        if chars > limits.max_chars:
            raise APIError(400, f"the messages hold {chars:,} characters; the limit is {limits.max_chars:,}",
                           param="messages", code="messages_too_long")
        try:
            return parse_messages(raw, "request")
        except DataError as e:
            message = str(e).removeprefix("request: ")
            raise APIError(400, message, param="messages") from None

    def room(prompt_tokens: int, asked: int | None, param: str) -> int:
        if asked is not None and asked > context:
            raise APIError(400, f"{param} is {asked:,}, more than the model's context of {context:,} tokens",
                           param=param, code="max_tokens_too_large")
        left = context - prompt_tokens
        if left < 1 or (asked is not None and asked > left):
            raise APIError(400, f"the prompt is {prompt_tokens:,} tokens and {param} {asked or 1:,}: together "
                                f"more than the model's context of {context:,} tokens",
                           param="messages" if param != "max_tokens" or asked is None else param,
                           code="context_length_exceeded")
        return asked if asked is not None else min(settings.sampling.max_new_tokens, left)

    # --- one generation -----------------------------------------------------------------------

    class Job:
        def __init__(self, body: Sampling, ids: list[int], max_tokens: int, kind: str, logged, client_name: str,
                     object: str = "chat.completion"):
            s = settings.sampling
            self.id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
            self.created, self.body, self.kind = int(time.time()), body, kind
            self.logged, self.client = logged, client_name
            self.prompt_tokens, self.completion_tokens = len(ids), 0
            stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
            self.out = TextOut(tok, stops)
            self.finish_reason: str | None = None
            self.queue: asyncio.Queue = asyncio.Queue()
            self.stored = asyncio.Event()
            in_flight[self.id] = self.stored
            loop = asyncio.get_running_loop()
            temperature = s.temperature if body.temperature is None else body.temperature
            top_p = s.top_p if body.top_p is None else body.top_p

            def deliver(token, finish):  # on the engine's thread
                try:
                    loop.call_soon_threadsafe(self.queue.put_nowait, (token, finish))
                except RuntimeError:  # the event loop has closed: the server is stopping
                    self.generation.cancel()

            self.generation = Generation(ids, max_tokens, deliver, temperature=temperature, top_k=s.top_k,
                                         top_p=top_p, seed=body.seed, stop_ids=end_ids)
            try:
                engine.submit(self.generation)
            except QueueFull as e:
                in_flight.pop(self.id, None)
                raise APIError(429, f"the server is busy ({e}); retry shortly", type="rate_limit_error",
                               code="rate_limit_exceeded") from None

        async def pieces(self):
            """Text pieces as they are decoded; at the end `finish_reason` is set and the answer stored.
            Tokens that arrived while the client was being served go out together as one piece,
            so a busy server sends fewer, larger events instead of falling behind."""
            try:
                while self.finish_reason is None:
                    arrived = [await self.queue.get()]
                    while not self.queue.empty():
                        arrived.append(self.queue.get_nowait())
                    text = ""
                    for token, finish in arrived:
                        if self.finish_reason is not None:
                            break
                        if token is not None:
                            self.completion_tokens += 1
                            text += self.out.add(token)
                            if self.out.stopped:
                                self.generation.cancel()
                                self.finish_reason = "stop"
                        elif finish.startswith("error"):
                            self.finish_reason = "error"
                        else:
                            self.finish_reason = "stop" if finish == "stop" else "length"
                    if text:
                        yield text
                    if self.finish_reason == "error":
                        raise APIError(500, f"generation failed: {finish}", type="server_error")
                piece = self.out.flush()
                if piece:
                    yield piece
            finally:
                self.generation.cancel()
                self.store()

        async def finish(self, request: Request) -> None:
            """Runs the generation to its end, stopping it if the client leaves first."""
            async def drain():
                async for _ in self.pieces():
                    pass

            task = asyncio.ensure_future(drain())
            while not task.done():
                await asyncio.wait([task], timeout=0.5)
                if not task.done() and await request.is_disconnected():
                    task.cancel()
            await task

        def store(self) -> None:
            if self.stored.is_set():
                return
            try:
                if store is not None:
                    store.add_completion(self.id, self.body.model, self.kind, self.logged, self.out.text,
                                         self.finish_reason or "cancelled", self.prompt_tokens,
                                         self.completion_tokens, self.client)
            finally:
                self.stored.set()
                in_flight.pop(self.id, None)

        def usage(self) -> dict:
            return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                    "total_tokens": self.prompt_tokens + self.completion_tokens}

        def usage_wanted(self) -> bool:
            return bool(self.body.stream_options and self.body.stream_options.include_usage)

    def chunk(job: Job, choice: dict, object: str) -> dict:
        return {"data": json.dumps({"id": job.id, "object": object, "created": job.created, "model": job.body.model,
                                    "choices": [choice]}, ensure_ascii=False)}

    def chat_events(job: Job):
        return events(job, "chat.completion.chunk", lambda piece, finish: {
            "index": 0, "delta": {} if finish else {"content": piece}, "logprobs": None, "finish_reason": finish},
            first={"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                   "finish_reason": None})

    def text_events(job: Job):
        return events(job, "text_completion", lambda piece, finish: {
            "index": 0, "text": piece, "logprobs": None, "finish_reason": finish})

    async def events(job: Job, kind: str, choice, first: dict | None = None):
        """A stream's events: `first` (if any), a chunk per piece, the finish chunk, the usage
        chunk when asked for, then [DONE]. The answer is stored (in `pieces`) before the finish
        chunk goes out; a failure mid-stream becomes an error event, then [DONE]."""
        if first is not None:
            yield chunk(job, first, kind)
        try:
            async for piece in job.pieces():
                yield chunk(job, choice(piece, None), kind)
        except APIError as e:
            yield {"data": json.dumps({"error": {"message": e.message, "type": e.type, "param": None,
                                                 "code": e.code}})}
        if job.finish_reason != "error":
            yield chunk(job, choice("", job.finish_reason), kind)
            if job.usage_wanted():
                yield {"data": json.dumps({"id": job.id, "object": kind, "created": job.created,
                                           "model": job.body.model, "choices": [], "usage": job.usage()})}
        yield {"data": "[DONE]"}

    def client(request: Request) -> str:
        return "page" if request.headers.get("x-loom-client") == "page" else "api"

    return app


def field_path(loc) -> str | None:
    """`messages.0.role` from pydantic's error location, without "body" and the names pydantic
    gives the shapes a field may take (`str`, `list[str]`, `function-after[...]`)."""
    parts = [str(part) for part in loc[1:] if isinstance(part, int) or part.isidentifier()] if loc else []
    shapes = {"str", "int", "float", "bool", "list", "dict", "none"}
    return ".".join(part for part in parts if part not in shapes) or None


def checked_text(text: str, param: str) -> str:
    """Text that encodes as UTF-8 (JSON can carry lone surrogates, which no tokenizer takes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise APIError(400, f"{param}: holds an unpaired surrogate (\\ud800-\\udfff), which is not text",
                       param=param, code="invalid_text") from None
    return text


# ---------------------------------------------------------------------------------------------
# `loom serve`
# ---------------------------------------------------------------------------------------------

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def serve(run_dir, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, log: bool = True,
          db: str | None = None, max_batch: int = 32, max_waiting: int = 64, cors_origins=(),
          model_name: str | None = None, sampling: SampleConfig | None = None, device: str = "cpu",
          say=print) -> None:
    """Loads the run's newest checkpoint and serves it until interrupted."""
    import uvicorn

    from loom.checkpoint import load_trained_model
    from loom.errors import ConfigError
    from loom.util import torch_device

    if host not in LOOPBACK and not api_key:
        raise ConfigError(f"--host {host} makes the server reachable from other machines: give it a key with "
                          "--api-key KEY (or the LOOM_API_KEY environment variable), or keep --host 127.0.0.1")
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, not {port}")
    if max_batch < 1 or max_waiting < 0:
        raise ConfigError(f"--max-batch must be at least 1 and --max-waiting at least 0 (got {max_batch}, "
                          f"{max_waiting})")
    sampling = sampling or SampleConfig()
    sampling.check()
    run_dir = Path(run_dir)
    model, tok, _ = load_trained_model(run_dir, torch_device(device))
    name = model_name or run_dir.resolve().name
    store = Store(Path(db) if db else run_dir / "serve.sqlite") if log else None
    engine = Engine(model, max_batch=max_batch, max_waiting=max_waiting)
    settings = ServeSettings(name, sampling, api_key=api_key or None, cors_origins=list(cors_origins))
    app = create_app(engine, tok, settings, store)
    where = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    say(f"[loom] serving {name} ({model.num_params():,} parameters, context {engine.context}) at {where}: "
        f"chat page at /, OpenAI API at /v1, schema at /openapi.json"
        + (f"; conversations logged to {store.path}" if store else "; nothing logged (--no-log)")
        + ("; API key required" if api_key else ""))
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
    finally:
        engine.close()
        if store:
            store.close()
