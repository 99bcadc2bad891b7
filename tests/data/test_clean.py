"""The clean chain: steps of one signature that return the document or the rule that drops it,
composed from the config, and the task account they write into."""

import json

from loom.config import load_config
from loom.data.clean import (
    TaskAccount,
    clean_chain,
    decontamination_step,
    normalize_step,
    quality_step,
    run_chain,
    scrub_step,
)
from loom.data.documents import Document

PROSE = ("The river runs past the old mill and under the stone bridge while the town still sleeps. "
         "Early in the morning the miller opens the gates, and the water begins to turn the wheel. "
         "By noon the baker has bought flour for the next day, and children play near the bank. "
         "In the evening the lamps are lit along the quay, where boats wait for the tide to rise.")


def doc(text: str, domain: str = "text") -> Document:
    return Document("d/1", text, domain, "test")


def test_the_chain_follows_the_config():
    full = clean_chain(load_config(None))
    assert full[0] is normalize_step and full[-1] is scrub_step and len(full) == 3  # normalize, quality, scrub
    bare = clean_chain(load_config(None, ["quality.enabled=false", "data.scrub_pii=false"]))
    assert bare == [normalize_step]
    assert len(clean_chain(load_config(None), contaminated=lambda text: False)) == 4


def test_a_dropped_document_is_counted_by_the_rule_that_dropped_it():
    account = TaskAccount(0)
    steps = clean_chain(load_config(None))
    assert run_chain(steps, doc("  \n\t "), account) is None
    assert run_chain(steps, doc("print('x')\n" * 3, "code:python"), account) is not None
    assert run_chain(steps, doc("too short to be prose"), account) is None
    assert account.dropped_by_rule == {"normalize.empty": 1, "gopher.too_few_words": 1}
    assert account.dropped_by_domain == {"text": 2}


def test_steps_that_change_text_count_what_they_did():
    account = TaskAccount(3)
    kept = run_chain([normalize_step, scrub_step], doc(PROSE + " Write to ada@example.org today."), account)
    assert "ada@example.org" not in kept.text and sum(account.redactions.values()) == 1
    noticed = PROSE + "\nThis website uses cookies to improve your experience."
    kept = run_chain([normalize_step, quality_step(load_config(None).quality)], doc(noticed), account)
    assert "cookies" not in kept.text and account.c4_lines_removed == 1
    dropped = run_chain([decontamination_step(lambda text: "mill" in text)], doc(PROSE), account)
    assert dropped is None and account.dropped_by_rule["decontamination"] == 1
    record = account.to_json()
    assert json.loads(json.dumps(record)) == record and record["task"] == 3
    assert record["redactions"] == dict(account.redactions)  # counts, not (key, count) pairs
