"""`loom feedback export`: rated answers in the server's log become an eval suite `loom eval`
runs, SFT conversations `loom sft` reads, and preference pairs; scrubbed and deduplicated."""

import json

import pytest

from conftest import run_loom
from loom.chat import read_conversations
from loom.data.pii import PLACEHOLDERS
from loom.errors import DataError
from loom.eval.feedback import read_feedback_suite
from loom.serve.store import Store


def log_some(db):
    store = Store(db)
    ask = [{"role": "user", "content": "Write to me at jane.doe@example.com about loops"}]
    other = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a tuple?"}]
    rows = [
        ("c1", "chat", ask, "A loop repeats. Mail sent to jane.doe@example.com", "stop", 1),
        ("c2", "chat", ask, "no idea", "stop", -1),
        ("c3", "chat", ask, "unrated answer", "length", None),
        ("c4", "chat", other, "An immutable sequence.", "stop", 1),
        ("c5", "chat", other, "An  immutable sequence.", "stop", 1),  # the same answer but for spacing
        ("c6", "chat", other, "A fish.", "cancelled", -1),
        ("c7", "text", "def f(", "x): pass", "stop", 1),  # a plain completion: no conversation to learn from
    ]
    for id, kind, request, answer, finish, rating in rows:
        store.add_completion(id, "m", kind, request, answer, finish, 10, 5, client="page")
        if rating is not None:
            store.add_rating(id, rating, "")
    store.add_rating("c2", 1, "on second thought, fine")  # the newest rating counts
    store.add_rating("c2", -1, "no, bad")
    store.close()
    return ask, other


def test_export_writes_a_suite_sft_conversations_and_pairs_scrubbed_and_deduplicated(tmp_path, tiny_run):
    db, out = tmp_path / "serve.sqlite", tmp_path / "feedback"
    ask, other = log_some(db)
    result = run_loom("feedback", "export", "--db", str(db), "--out", str(out), cwd=tmp_path)
    assert "6 rated of 7 answers" in result.stdout

    def lines(name):
        return [json.loads(line) for line in (out / name).read_text().splitlines()]

    suite = {tuple(m["content"] for m in item["messages"]): item for item in lines("eval.jsonl")}
    scrubbed_ask = suite[next(k for k in suite if "loops" in k[0])]
    assert "jane.doe@example.com" not in json.dumps(scrubbed_ask)
    assert scrubbed_ask["chosen"] == [f"A loop repeats. Mail sent to {PLACEHOLDERS['email']}"]
    assert scrubbed_ask["rejected"] == ["no idea"]
    tuple_item = suite[("Be brief.", "What is a tuple?")]
    assert len(tuple_item["chosen"]) == 2 and tuple_item["rejected"] == ["A fish."]

    sft = lines("sft.jsonl")
    assert len(sft) == 2  # c1, and c4/c5 once: the same conversation but for spacing
    assert [m["role"] for m in sft[-1]["messages"]] == ["system", "user", "assistant"]
    assert len(list(read_conversations(out / "sft.jsonl", require_assistant=True))) == 2
    pairs = lines("preferences.jsonl")
    assert {(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs} >= {
        ("An immutable sequence.", "A fish.")}
    assert all(p["prompt"][-1]["role"] == "user" for p in pairs) and len(pairs) == 2
    card = json.loads((out / "card.json").read_text())
    assert card["pii_scrubbed"].get("email", 0) >= 2 and card["files"]["sft.jsonl"]["duplicates_dropped"] == 1

    run_dir = tiny_run[0]
    run_loom("eval", "--run", str(run_dir), "--suite", str(out / "eval.jsonl"), cwd=tmp_path)
    result = json.loads((run_dir / "eval" / "feedback-eval.json").read_text())
    metrics = result["metrics"]
    assert metrics["prompts"] == 2 and metrics["pairs"] == 1 + 2
    assert 0 <= metrics["pairs/preference_accuracy"] <= 1 and metrics["chosen/nats_per_token"] > 0


def test_export_and_the_suite_refuse_what_is_not_theirs(tmp_path):
    missing = run_loom("feedback", "export", "--db", str(tmp_path / "none.sqlite"), "--out", str(tmp_path / "o"),
                       cwd=tmp_path, ok=False)
    assert "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    junk = tmp_path / "junk.sqlite"
    junk.write_text("not a database at all " * 100)
    refused = run_loom("feedback", "export", "--db", str(junk), "--out", str(tmp_path / "o"), cwd=tmp_path, ok=False)
    assert "not a loom serve log" in refused.stderr and "Traceback" not in refused.stderr
    bad_suite = tmp_path / "bad.jsonl"
    bad_suite.write_text('{"messages": [{"role": "user", "content": "hi"}], "chosen": "yes"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: 'chosen' must be a list"):
        read_feedback_suite(bad_suite)
