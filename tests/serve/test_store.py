"""The log survives the server: SIGKILL in the middle of a stream loses no finished conversation
or rating, and a restarted server goes on writing to the same file."""

import http.client
import json
import sqlite3

import openai

from conftest import Server
from loom.serve.store import rated_completions


def test_sigkill_mid_stream_keeps_every_finished_conversation_and_rating(serve_run, tmp_path):
    db = tmp_path / "serve.sqlite"
    server = Server(serve_run[0], db)
    api = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=120)
    finished = []
    try:
        for i in range(3):
            answer = api.chat.completions.create(model="serve", max_tokens=6 + i,
                                                 messages=[{"role": "user", "content": f"question {i}"}])
            finished.append((answer.id, answer.choices[0].message.content))
        streamed = "".join(c.choices[0].delta.content or "" for c in api.chat.completions.create(
            model="serve", max_tokens=8, stream=True, messages=[{"role": "user", "content": "streamed"}]))
        finished.append((None, streamed))
        assert server.post("/v1/feedback", {"completion_id": finished[0][0], "rating": "up"})[0] == 200
        assert server.post("/v1/feedback", {"completion_id": finished[1][0], "rating": "down",
                                            "comment": "wrong"})[0] == 200

        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        body = {"model": "serve", "max_tokens": 480, "stream": True, "messages": [{"role": "user", "content": "long"}]}
        connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        in_flight = json.loads(response.readline().decode()[len("data: "):])["id"]
        server.kill()  # SIGKILL while that answer is being written
    finally:
        server.stop()

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    stored = rated_completions(db)
    by_id = {row["id"]: row for row in stored}
    for id, text in finished[:3]:
        assert by_id[id]["answer"] == text and by_id[id]["finish_reason"] in ("stop", "length")
    assert any(row["request"] == [{"role": "user", "content": "streamed"}] and row["answer"] == finished[3][1]
               for row in stored)
    assert (by_id[finished[0][0]]["rating"], by_id[finished[1][0]]["rating"]) == (1, -1)
    assert by_id[finished[1][0]]["comment"] == "wrong"
    assert in_flight not in by_id  # it never finished: nothing half-written

    again = Server(serve_run[0], db)  # a restart writes on to the same file
    try:
        status, answer = again.post("/v1/chat/completions", {"model": "serve", "max_tokens": 4,
                                                             "messages": [{"role": "user", "content": "back?"}]})
        assert status == 200
    finally:
        again.stop()
    assert len(rated_completions(db)) == len(stored) + 1
