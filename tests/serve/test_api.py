"""`loom serve` as a client sees it: the official `openai` client, streams, limits, bad input,
keys, disconnects, and what lands in the database. Every test talks to a real server process."""

import http.client
import json
import sqlite3
import subprocess
import sys
import threading
import time

import openai
import pytest

from conftest import Server
from loom.serve.api import TextOut
from loom.tokenizer import Tokenizer


def client(server, key="none"):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=120)


def rows(db, sql, *args):
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, args).fetchall()


def test_the_openai_client_lists_chats_streams_and_completes(server, serve_run):
    api = client(server)
    assert [m.id for m in api.models.list()] == [serve_run[1]]

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"}]
    whole = api.chat.completions.create(model="serve", messages=messages, max_tokens=12, temperature=0)
    answer = whole.choices[0]
    assert whole.object == "chat.completion" and answer.message.role == "assistant"
    assert answer.finish_reason in ("stop", "length")
    assert whole.usage.completion_tokens <= 12 and whole.usage.prompt_tokens > 5
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

    chunks = list(api.chat.completions.create(model="serve", messages=messages, max_tokens=12, temperature=0,
                                              stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == answer.message.content  # greedy: the same answer either way
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == answer.finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1

    text = api.completions.create(model="serve", prompt="def add(a, b):", max_tokens=8, temperature=0)
    assert text.object == "text_completion" and text.usage.completion_tokens <= 8
    streamed = "".join(c.choices[0].text for c in api.completions.create(
        model="serve", prompt="def add(a, b):", max_tokens=8, temperature=0, stream=True))
    assert streamed == text.choices[0].text

    stored = rows(server.db, "SELECT kind, request, answer FROM completions WHERE id = ?", whole.id)
    assert stored == [("chat", json.dumps(messages, ensure_ascii=False), answer.message.content)]


def test_every_stream_ends_in_done_and_its_bytes_are_whole_characters(server):
    body = {"model": "serve", "messages": [{"role": "user", "content": "Say héllo in 日本語"}], "max_tokens": 40,
            "temperature": 1.0, "seed": 7, "stream": True}
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("content-type").startswith("text/event-stream")
    lines = response.read().decode("utf-8").splitlines()
    events = [line[len("data: "):] for line in lines if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    pieces = [json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1]]
    assert not any("\ufffd" in p for p in pieces)
    whole = server.post("/v1/chat/completions", {**body, "stream": False})[1]
    assert "".join(pieces) == whole["choices"][0]["message"]["content"]  # the same seed, the same answer


def test_text_out_holds_back_split_characters_and_possible_stop_strings(tiny_run):
    tok = Tokenizer.from_file(tiny_run[0] / "tokenizer.json")
    text = "naïve café 日本 END tail"
    out = TextOut(tok, ["END"])
    pieces = [out.add(t) for t in tok.encode(text)] + [out.flush()]
    assert "".join(pieces) == "naïve café 日本 " and out.stopped
    assert not any("\ufffd" in p for p in pieces)
    assert not any(p.endswith(("E", "EN")) for p in pieces)  # a stop string's start is never let out early
    plain = TextOut(tok, [])
    assert "".join([plain.add(t) for t in tok.encode(text)] + [plain.flush()]) == text


def test_stop_strings_seeds_and_limits_behave_as_openai_documents(server):
    api = client(server)
    messages = [{"role": "user", "content": "Count to ten."}]
    settings = dict(model="serve", messages=messages, max_tokens=30, temperature=1.0, seed=5)
    text = api.chat.completions.create(**settings).choices[0].message.content
    stop = next(text[i : i + 3] for i in range(len(text) // 2, len(text) - 2) if text[i : i + 3].strip())
    cut = api.chat.completions.create(**settings, stop=[stop])  # the same seed: the same tokens up to the stop
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"

    sampled = [api.chat.completions.create(model="serve", messages=messages, max_tokens=20, temperature=1.0,
                                           seed=s).choices[0].message.content for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] != sampled[2]
    capped = api.chat.completions.create(model="serve", messages=messages, max_tokens=3, temperature=1.0, seed=3)
    assert capped.usage.completion_tokens <= 3 and capped.choices[0].finish_reason in ("length", "stop")


BAD = [
    # (what, body or raw bytes, status, param)
    ("malformed JSON", b'{"model": "serve", "messages": [', 400, None),
    ("not an object", b"[1, 2]", 400, None),
    ("wrong type", {"model": "serve", "messages": "hello"}, 400, "messages"),
    ("missing messages", {"model": "serve"}, 400, "messages"),
    ("missing model", {"messages": [{"role": "user", "content": "hi"}]}, 400, "model"),
    ("unknown role", {"model": "serve", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role"),
    ("empty messages", {"model": "serve", "messages": []}, 400, "messages"),
    ("unknown model", {"model": "gpt-7", "messages": [{"role": "user", "content": "hi"}]}, 404, "model"),
    ("too many messages", {"model": "serve", "messages": [{"role": "user", "content": "x"}] * 300}, 400, "messages"),
    ("max_tokens beyond the context", {"model": "serve", "messages": [{"role": "user", "content": "hi"}],
                                       "max_tokens": 100_000}, 400, "max_tokens"),
    ("max_tokens beyond the room left", {"model": "serve", "messages": [{"role": "user", "content": "hi"}],
                                         "max_tokens": 510}, 400, "max_tokens"),
    ("negative max_tokens", {"model": "serve", "messages": [{"role": "user", "content": "hi"}],
                             "max_tokens": -1}, 400, "max_tokens"),
    ("temperature out of range", {"model": "serve", "messages": [{"role": "user", "content": "hi"}],
                                  "temperature": 9}, 400, "temperature"),
    ("n above one", {"model": "serve", "messages": [{"role": "user", "content": "hi"}], "n": 2}, 400, "n"),
    ("five stop strings", {"model": "serve", "messages": [{"role": "user", "content": "hi"}],
                           "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("lone surrogate", b'{"model": "serve", "messages": [{"role": "user", "content": "\\ud800"}]}', 400,
     "messages.0.content"),
    ("oversized body", {"model": "serve", "messages": [{"role": "user", "content": "x" * (6 << 20)}]}, 413, None),
    ("too many characters", {"model": "serve", "messages": [{"role": "user", "content": "x" * 120_000}]}, 400,
     "messages"),
]


@pytest.mark.parametrize("what,body,status,param", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_a_4xx_in_openai_error_shape_and_the_server_keeps_serving(server, what, body, status, param):
    if isinstance(body, bytes):
        got, answer = server.post("/v1/chat/completions", raw=body)
    else:
        got, answer = server.post("/v1/chat/completions", body)
    assert got == status, answer
    assert set(answer) == {"error"} and set(answer["error"]) == {"message", "type", "param", "code"}
    assert answer["error"]["param"] == param and answer["error"]["message"]
    assert server.get("/health")[0] == 200


def test_a_declared_body_far_past_the_limit_is_refused_without_waiting_for_it(server):
    """The oversized case above sends all 6 MiB and reads the 413 (the server drains it); a body
    declared at 1 GB is answered at once, while the client has sent only its first bytes."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    connection.putrequest("POST", "/v1/chat/completions")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(1 << 30))
    connection.endheaders(b'{"model": "serve", "messages": [')
    response = connection.getresponse()
    assert response.status == 413 and json.loads(response.read())["error"]["code"] == "request_too_large"
    connection.close()
    assert server.get("/health")[0] == 200


def test_other_bad_requests_the_client_library_would_send(server):
    api = client(server)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        api.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError):
        api.completions.create(model="serve", prompt="x", max_tokens=10**6)
    assert server.get("/v1/nothing-here")[0] == 404
    assert server.request("DELETE", "/v1/models")[0] == 405
    assert server.post("/v1/feedback", {"completion_id": "chatcmpl-none", "rating": "up"})[0] == 404
    assert server.post("/v1/feedback", {"completion_id": "x", "rating": "sideways"})[0] == 400


def test_ratings_are_stored_beside_their_answer(server):
    api = client(server)
    answer = api.chat.completions.create(model="serve", messages=[{"role": "user", "content": "Hi!"}], max_tokens=5)
    status, body = server.post("/v1/feedback", {"completion_id": answer.id, "rating": "down", "comment": "rude"})
    assert status == 200 and body["rating"] == "down"
    assert rows(server.db, "SELECT rating, comment FROM ratings WHERE completion_id = ?", answer.id) == [(-1, "rude")]


def test_a_client_that_disconnects_stops_its_generation(server):
    body = {"model": "serve", "messages": [{"role": "user", "content": "Write a long story."}],
            "max_tokens": 480, "temperature": 1.0, "seed": 11, "stream": True}
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    first = json.loads(response.readline().decode()[len("data: "):])
    connection.sock.close()  # the client goes away after the first chunk
    connection.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not rows(server.db, "SELECT 1 FROM completions WHERE id = ?", first["id"]):
        time.sleep(0.1)
    [(finish, tokens)] = rows(server.db, "SELECT finish_reason, completion_tokens FROM completions WHERE id = ?",
                              first["id"])
    assert finish == "cancelled" and tokens < 480
    assert server.get("/health")[1]["running"] == 0


def test_a_full_queue_answers_429_and_the_rest_are_served(serve_run, tmp_path):
    s = Server(serve_run[0], None, "--no-log", "--max-batch", "1", "--max-waiting", "0")
    try:
        start, results = threading.Barrier(12), []

        def one():
            start.wait()
            results.append(s.post("/v1/chat/completions", {"model": "serve", "max_tokens": 200,
                                                           "messages": [{"role": "user", "content": "Go on."}]}))

        threads = [threading.Thread(target=one) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        statuses = sorted(status for status, _ in results)
        assert 200 in statuses and 429 in statuses and set(statuses) <= {200, 429}, statuses
        busy = next(body for status, body in results if status == 429)
        assert busy["error"]["code"] == "rate_limit_exceeded"
        assert s.post("/v1/feedback", {"completion_id": "x", "rating": "up"})[0] == 409  # --no-log: no ratings
    finally:
        s.stop()


def test_keys_loopback_and_cors(serve_run, tmp_path):
    out = subprocess.run([sys.executable, "-m", "loom", "serve", "--run", str(serve_run[0]), "--host", "0.0.0.0"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "--api-key" in out.stderr and "Traceback" not in out.stderr

    s = Server(serve_run[0], tmp_path / "keyed.sqlite", api_key="s3cret-key")
    try:
        assert s.get("/v1/models")[0] == 401
        assert s.get("/v1/models", headers={"Authorization": "Bearer wrong"})[0] == 401
        status, body = s.get("/v1/models", headers={"Authorization": "Bearer s3cret-key"})
        assert status == 200 and body["data"][0]["id"] == "serve"
        assert client(s, "s3cret-key").chat.completions.create(
            model="serve", messages=[{"role": "user", "content": "hi"}], max_tokens=2).choices
        with pytest.raises(openai.AuthenticationError):
            client(s, "nope").models.list()
        connection = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        connection.request("GET", "/health", headers={"Origin": "http://evil.example"})
        assert connection.getresponse().getheader("access-control-allow-origin") is None
    finally:
        s.stop()
    assert "serving serve" in s.output() and "s3cret-key" not in s.output()  # the key is never logged
