"""Model backends: rules, a real local OpenAI-compatible HTTP server, a tiny loom run, a tiny
transformers model saved to disk, and `make_backend`'s parsing."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from rules_backend import RuleBackend

from loom.errors import LoomError
from loom.reason.backends import (
    Backend,
    BackendError,
    Completion,
    GenerationSettings,
    HFBackend,
    LoomBackend,
    OpenAIBackend,
    make_backend,
)

GREEDY = GenerationSettings(max_tokens=8, stop=("\n",))


# --- rules ------------------------------------------------------------------------------------------


def test_rules_match_in_order_on_the_last_occurrence_with_callables():
    backend = RuleBackend([
        (r'last letter of "(\w+)"', lambda m: m.group(1)[-1]),
        (r"capital of (\w+)", "Paris"),
        (r"letter", "never: the rule above wins"),
    ])
    prompt = 'Q: the last letter of "cat"?\nA: t\nQ: the last letter of "dog"?\nA:'
    out = backend.complete([prompt, "What is the capital of France?"], GREEDY)
    assert [c.text for c in out] == ["g", "Paris"]
    assert out[1] == Completion("Paris", 6, 1, "stop", estimated_tokens=True)
    assert isinstance(backend, Backend) and backend.name == "rules"


def test_rules_default_and_no_match():
    with_default = RuleBackend([(r"yes\?", "yes")], default=lambda p: f"echo {p.split()[-1]}")
    assert with_default.complete(["say it loud"], GREEDY)[0].text == "echo loud"
    assert RuleBackend(default="dunno").complete(["anything"], GREEDY)[0].text == "dunno"
    with pytest.raises(BackendError, match="no rule matches the prompt 'anything'"):
        RuleBackend([(r"yes\?", "yes")]).complete(["anything"], GREEDY)
    with pytest.raises(BackendError, match="not a valid regular expression"):
        RuleBackend([("(", "x")])


def test_rules_honour_stop_and_max_tokens_like_a_model():
    backend = RuleBackend([(r"plan", "one two three\nfour"), (r"count", "a  b c d e f"), (r"raw", lambda m: "x\ny")])
    assert backend.complete(["plan"], GREEDY)[0].text == "one two three"
    assert backend.complete(["plan"], GenerationSettings(stop=()))[0].text == "one two three\nfour"
    c = backend.complete(["count"], GenerationSettings(max_tokens=2))[0]
    assert (c.text, c.completion_tokens, c.finish_reason) == ("a  b", 2, "length")
    canned = Completion("half an ans", 3, 3, "length")
    assert RuleBackend([("q", canned)]).complete(["q"], GREEDY) == [canned]
    assert GenerationSettings(stop="END").stop == ("END",)


def test_rules_count_calls_and_record_overlapping_timings():
    backend = RuleBackend([(r"\d+", lambda m: str(int(m.group()) * 2))], delay=0.2)
    results: dict[int, str] = {}

    def ask(i: int) -> None:
        results[i] = backend.complete([f"double {i}", f"double {i + 100}"], GREEDY)[0].text

    start = time.monotonic()
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    assert results == {i: str(2 * i) for i in range(4)}
    assert backend.calls == 4 and len(backend.prompts) == 8 and len(backend.timings) == 4
    assert all(end - begin >= 0.2 for begin, end in backend.timings)
    assert backend.peak_concurrency >= 2  # the delay is slept outside the lock
    assert elapsed < 0.8 - 0.05  # four sequential calls would take 0.8 s


def test_rule_errors_propagate_and_are_recorded():
    def boom(m):
        raise BackendError("rules: simulated outage")

    backend = RuleBackend([("x", boom)])
    with pytest.raises(BackendError, match="simulated outage"):
        backend.complete(["x"], GREEDY)
    assert backend.calls == 1 and len(backend.timings) == 1


def test_settings_are_checked():
    for bad in (dict(max_tokens=0), dict(temperature=-1.0), dict(top_p=0.0)):
        with pytest.raises(LoomError, match="generation settings"):
            GenerationSettings(**bad)


# --- an OpenAI-compatible server on 127.0.0.1 ----------------------------------------------------------


class FakeServer:
    """A real HTTP server speaking /v1/completions and /v1/chat/completions. It answers the
    prompt's last word in capitals followed by "\\nmore words" (cut at the request's stop strings
    unless `ignore_stop`, and to `max_tokens` words), with usage in words. `fail_first` requests
    get `fail_status`; `stall` makes it sleep without answering; `trickle` sends headers and then a
    byte every 50 ms; `garbage` is a body sent as is."""

    def __init__(self):
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.in_flight = self.peak_in_flight = 0
        self.delay = 0.0
        self.fail_first = 0
        self.fail_status = 500
        self.stall = False
        self.trickle = False
        self.garbage: bytes | None = None
        self.ignore_stop = False
        self.usage = True
        self.lock = threading.Lock()
        self.closing = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, path: str, request: dict) -> tuple[int, bytes]:
        chat = path.endswith("/chat/completions")
        prompt = request["messages"][-1]["content"] if chat else request["prompt"]
        text = " " + prompt.split()[-1].upper() + "\nmore words"
        if not self.ignore_stop:
            for s in request.get("stop", []):
                text = text.split(s)[0]
        words = text.split()
        finish = "stop"
        if len(words) > request.get("max_tokens", 16):
            text, finish = " " + " ".join(words[: request["max_tokens"]]), "length"
        choice = {"index": 0, "finish_reason": finish}
        choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
        body: dict = {"id": "x", "object": "chat.completion" if chat else "text_completion", "choices": [choice]}
        if self.usage:
            body["usage"] = {"prompt_tokens": 100 + len(prompt.split()), "completion_tokens": len(text.split())}
        return 200, json.dumps(body).encode()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                request = json.loads(self.rfile.read(length))
                with server.lock:
                    server.requests.append(request)
                    server.headers.append(dict(self.headers))
                    n = len(server.requests)
                    server.in_flight += 1
                    server.peak_in_flight = max(server.peak_in_flight, server.in_flight)
                try:
                    if server.stall:
                        server.closing.wait(10)  # far longer than the client's timeout
                        return
                    if server.trickle:  # headers at once, then a byte now and then: every read succeeds
                        self.send_response(200)
                        self.send_header("Content-Length", "1000")
                        self.end_headers()
                        while not server.closing.wait(0.05):
                            try:
                                self.wfile.write(b" ")
                                self.wfile.flush()
                            except OSError:
                                return
                        return
                    time.sleep(server.delay)
                    if not self.path.startswith("/v1/") or not self.path.endswith("completions"):
                        status, body = 404, b'{"error": "no such route"}'
                    elif n <= server.fail_first:
                        status, body = server.fail_status, b'{"error": "try later"}'
                    elif server.garbage is not None:
                        status, body = 200, server.garbage
                    else:
                        status, body = server.answer(self.path, request)
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                finally:
                    with server.lock:
                        server.in_flight -= 1

        return Handler


@pytest.fixture
def server():
    s = FakeServer()
    yield s
    s.close()


def client(server: FakeServer, **kwargs) -> OpenAIBackend:
    options = dict(model="tiny", api_key="sk-test", timeout=2.0, retries=2, backoff=0.01)
    return OpenAIBackend(server.url, **{**options, **kwargs})


def test_openai_completion_sends_the_settings_and_the_key(server):
    backend = client(server)
    settings = GenerationSettings(max_tokens=5, stop=("\n", "###"), temperature=0.5, top_p=0.9, seed=7)
    [c] = backend.complete(["the answer is forty"], settings)
    assert c == Completion(" FORTY", 104, 1, "stop")
    assert server.requests == [{"model": "tiny", "prompt": "the answer is forty", "max_tokens": 5,
                                "temperature": 0.5, "top_p": 0.9, "seed": 7, "stop": ["\n", "###"]}]
    assert server.headers[0]["Authorization"] == "Bearer sk-test"
    assert backend.name == f"openai:{server.url} model=tiny" and backend.retries_log == []


def test_openai_chat(server):
    [c] = client(server, chat=True).complete(["name a colour: blue"], GREEDY)
    assert c.text == " BLUE" and c.completion_tokens == 1
    assert server.requests[0]["messages"] == [{"role": "user", "content": "name a colour: blue"}]
    assert "prompt" not in server.requests[0]


def test_openai_key_from_environment_or_none(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    OpenAIBackend(server.url, timeout=2.0).complete(["a b"], GREEDY)
    monkeypatch.delenv("OPENAI_API_KEY")
    OpenAIBackend(server.url, timeout=2.0).complete(["a b"], GREEDY)
    assert server.headers[0]["Authorization"] == "Bearer sk-env"
    assert "Authorization" not in server.headers[1]
    assert "model" not in server.requests[1]  # no model named: left out, as llama.cpp allows


def test_openai_client_cuts_at_stop_and_estimates_missing_usage(server):
    server.ignore_stop, server.usage = True, False
    [c] = client(server).complete(["one two three"], GenerationSettings(max_tokens=10))
    assert c == Completion(" THREE", 3, 1, "stop", estimated_tokens=True)
    [c] = client(server).complete(["one two three"], GenerationSettings(max_tokens=2, stop=()))
    assert c.text == " THREE more" and c.finish_reason == "length"


def test_openai_batch_runs_concurrently_and_keeps_order(server):
    server.delay = 0.25
    backend = client(server, max_concurrency=4)
    prompts = [f"word number w{i}" for i in range(8)]
    start = time.monotonic()
    out = backend.complete(prompts, GREEDY)
    elapsed = time.monotonic() - start
    assert [c.text for c in out] == [f" W{i}" for i in range(8)]
    assert 2 <= server.peak_in_flight <= 4
    assert elapsed < 8 * 0.25  # sequential requests would take 2 s


def test_openai_stalled_server_is_retried_then_fails_within_bounds(server):
    server.stall = True
    backend = client(server, timeout=0.3, retries=2, backoff=0.05)
    start = time.monotonic()
    with pytest.raises(BackendError) as err:
        backend.complete(["hello there"], GREEDY)
    elapsed = time.monotonic() - start
    assert 3 * 0.3 * 0.9 < elapsed < 0.3 * (2 + 1) + 1.0
    assert "failed after 3 attempts" in str(err.value) and server.url in str(err.value)
    assert "TimeoutError: no complete answer within 0.3 s" in str(err.value)
    assert len(backend.retries_log) == 2 and len(server.requests) == 3
    assert [r["attempt"] for r in backend.retries_log] == [1, 2]


def test_openai_trickling_server_is_cut_off_at_the_deadline(server):
    server.trickle = True
    backend = client(server, timeout=0.4, retries=1, backoff=0.01)
    start = time.monotonic()
    with pytest.raises(BackendError, match="within 0.4 s"):
        backend.complete(["slowly"], GREEDY)
    assert time.monotonic() - start < 0.4 * 2 + 1.0  # each read alone would never time out


@pytest.mark.parametrize("garbage", [b"<html>Bad gateway</html>", b'{"error": "no choices here"}', b'{"choices": []}'])
def test_openai_garbage_is_retried_then_reported(server, garbage):
    server.garbage = garbage
    backend = client(server)
    with pytest.raises(BackendError, match="returned garbage") as err:
        backend.complete(["hi"], GREEDY)
    assert garbage.decode()[:20] in str(err.value)
    assert len(server.requests) == 3 and len(backend.retries_log) == 2


def test_openai_server_errors_then_success(server):
    server.fail_first = 2
    backend = client(server)
    [c] = backend.complete(["finally works"], GREEDY)
    assert c.text == " WORKS"
    assert len(backend.retries_log) == 2
    assert all("HTTP 500" in r["error"] and r["url"] == server.url + "/completions" for r in backend.retries_log)
    assert backend.retries_log[0]["delay"] < backend.retries_log[1]["delay"]  # exponential backoff


def test_openai_rate_limit_is_retried(server):
    server.fail_first, server.fail_status = 1, 429
    backend = client(server)
    assert backend.complete(["ok then"], GREEDY)[0].text == " THEN"
    assert "HTTP 429" in backend.retries_log[0]["error"]


def test_openai_unauthorized_fails_at_once(server):
    server.fail_first, server.fail_status = 100, 401
    backend = client(server)
    start = time.monotonic()
    with pytest.raises(BackendError, match="HTTP 401") as err:
        backend.complete(["hi"], GREEDY)
    assert "API key" in str(err.value) and "not retried" in str(err.value)
    assert len(server.requests) == 1 and backend.retries_log == []
    assert time.monotonic() - start < 1.0


def test_openai_wrong_path_suggests_the_base_url(server):
    with pytest.raises(BackendError, match="HTTP 404.*base URL"):
        OpenAIBackend(server.url.removesuffix("/v1"), timeout=2.0, retries=2).complete(["hi"], GREEDY)
    assert len(server.requests) == 1


def test_openai_connection_refused_is_retried_then_reported():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    backend = OpenAIBackend(f"http://127.0.0.1:{port}/v1", timeout=1.0, retries=2, backoff=0.01)
    start = time.monotonic()
    with pytest.raises(BackendError) as err:
        backend.complete(["a", "b"], GREEDY)
    assert time.monotonic() - start < 2.0
    message = str(err.value)
    assert f"http://127.0.0.1:{port}/v1/completions" in message and "3 attempts" in message
    assert "refused" in message.lower() and "server running" in message
    assert len(backend.retries_log) >= 2


def test_openai_rejects_a_bad_url():
    with pytest.raises(BackendError, match="http://HOST:PORT/v1"):
        OpenAIBackend("localhost:8080/v1")


# --- a loom run ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loom_pair(tiny_run):
    from loom.eval.lm import LoomLM

    run_dir, _ = tiny_run
    return LoomBackend(run_dir), LoomLM.from_run(run_dir)


def test_loom_backend_matches_loomlm_generate(loom_pair, tiny_run):
    backend, lm = loom_pair
    prompts = ["def add(a, b):", "import os\n", "The number is", "class"]
    unstopped = lm.generate(prompts[0], 12, ())[0]
    stop = (unstopped[3:5], "\n\n")  # the first answer is sure to stop early
    settings = GenerationSettings(max_tokens=12, stop=stop)
    out = backend.complete(prompts, settings)
    assert [c.text for c in out] == [lm.generate(p, 12, stop)[0] for p in prompts]
    assert out[0].text == unstopped[: unstopped.find(stop[0])] and out[0].finish_reason == "stop"
    for prompt, c in zip(prompts, out):
        assert c.prompt_tokens == len(lm.encode(prompt)) + 1  # + <|bos|>
        assert c.completion_tokens == len(lm.encode(c.text))
        assert c.finish_reason == ("length" if c.completion_tokens >= 12 else "stop")
        assert not c.estimated_tokens
    sampled = GenerationSettings(max_tokens=6, stop=(), temperature=1.0, top_p=0.9, seed=3)
    [c] = backend.complete(["x = "], sampled)
    assert c.text == lm.generate("x = ", 6, (), temperature=1.0, top_p=0.9, seed=3)[0]
    assert backend.name == f"loom:{tiny_run[0]}"


def test_loom_backend_reports_a_missing_run(tmp_path):
    with pytest.raises(BackendError, match=f"loom:{tmp_path}.*not a loom run"):
        LoomBackend(tmp_path)


# --- a local transformers model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_dir(tiny_run, tmp_path_factory):
    """A random one-layer GPT-2 with the tiny run's tokenizer, saved as transformers saves models."""
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    import torch

    from loom.tokenizer import BOS, EOS, PAD

    run_dir, _ = tiny_run
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(run_dir / "tokenizer.json"),
                                               bos_token=BOS, eos_token=EOS, pad_token=PAD)
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=128, vocab_size=len(tok),
                                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                     pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    path = tmp_path_factory.mktemp("hf-model")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def direct_generate(model_dir, prompt: str, max_new_tokens: int, stop: tuple[str, ...]) -> str:
    """Greedy text straight from transformers' generate, cut at the first stop string."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True).eval()
    enc = tok(prompt, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    text = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[: min(cuts)] if cuts else text


def test_hf_backend_matches_direct_generate_in_a_batch(hf_dir):
    backend = HFBackend(hf_dir, batch_size=3)
    prompts = ["def f(x):", "The quick brown fox jumps over", "a", "import sys\nprint(sys.argv)", "Hello"]
    unstopped = backend.complete(prompts, GenerationSettings(max_tokens=10, stop=()))
    assert [c.text for c in unstopped] == [direct_generate(hf_dir, p, 10, ()) for p in prompts]
    assert all(c.completion_tokens == 10 and c.finish_reason == "length" for c in unstopped)
    stop = (unstopped[1].text[3:5],)  # a string the second answer is sure to contain
    out = backend.complete(prompts, GenerationSettings(max_tokens=10, stop=stop))
    assert [c.text for c in out] == [direct_generate(hf_dir, p, 10, stop) for p in prompts]
    assert out[1].text == unstopped[1].text[: unstopped[1].text.find(stop[0])] and out[1].finish_reason == "stop"
    assert out[1].completion_tokens < 10  # the stopping criterion ended that row early
    for prompt, c in zip(prompts, out):
        assert c.prompt_tokens == len(backend.tokenizer(prompt)["input_ids"])
    assert backend.name == f"hf:{hf_dir}"
    sampled = GenerationSettings(max_tokens=6, stop=(), temperature=1.0, seed=1)
    assert backend.complete(["x"], sampled) == backend.complete(["x"], sampled)  # the seed decides


def test_hf_backend_reports_a_missing_or_broken_directory(tmp_path):
    pytest.importorskip("transformers", reason="transformers is not installed")
    with pytest.raises(BackendError, match="is not a directory"):
        HFBackend(tmp_path / "absent")
    with pytest.raises(BackendError, match="could not load"):
        HFBackend(tmp_path)


# --- make_backend ----------------------------------------------------------------------------------


def test_make_backend_forms(tiny_run):
    backend = make_backend("openai:http://127.0.0.1:9/v1/#model=qwen&chat=true", timeout=5.0)
    assert isinstance(backend, OpenAIBackend)
    assert (backend.base_url, backend.model, backend.chat, backend.timeout) == ("http://127.0.0.1:9/v1", "qwen",
                                                                                 True, 5.0)
    assert backend.url == "http://127.0.0.1:9/v1/chat/completions"
    plain = make_backend("openai:http://127.0.0.1:9/v1")
    assert plain.model == "" and not plain.chat
    assert isinstance(make_backend(f"loom:{tiny_run[0]}"), LoomBackend)


@pytest.mark.parametrize("spec, message", [
    ("gpt4", "unknown model backend 'gpt4'; use one of: loom:RUN_DIR, hf:MODEL_DIR, openai:BASE_URL"),
    ("ftp:x", "unknown model backend"),
    ("loom:", "names no directory"),
    ("openai:", "names no URL"),
    ("openai:http://h/v1#temperature=2", "model=NAME and chat=true"),
    ("hf:/no/such/dir", "is not a directory"),
])
def test_make_backend_errors(spec, message):
    if spec.startswith("hf:"):
        pytest.importorskip("transformers", reason="transformers is not installed")
    with pytest.raises(BackendError, match=message.replace("(", r"\(")):
        make_backend(spec)
