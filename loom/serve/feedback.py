"""`loom feedback export`: what real users asked and rated, turned into data.

From the server's log (`loom.serve.store`) it writes, into one directory, each file atomically:

- `eval.jsonl`: every chat prompt with at least one rated answer, `{"id", "messages", "chosen",
  "rejected"}` (answers rated up and down): a suite for `loom eval --suite DIR/eval.jsonl`
  (`loom.eval.feedback`);
- `sft.jsonl`: every answer rated up as a conversation, `{"messages": [...prompt, answer]}`,
  ready for `loom sft --data`;
- `preferences.jsonl`: every (up, down) pair of answers to one prompt in TRL's conversational
  preference shape, `{"prompt": [...], "chosen": [answer], "rejected": [answer]}`;
- `card.json`: what was read, kept, scrubbed and dropped as a duplicate.

Every text goes through the data pipeline's PII scrubber (`loom.data.pii.scrub`: e-mail addresses,
IP addresses, keys and passwords become placeholders) before anything else, and each file is
deduplicated on the data pipeline's content hash of each record, case and spacing aside (`loom.data.dedup`),
so a prompt asked a hundred times is one item. Only chat completions count (a plain completion
has no conversation); answers whose client left before they finished are used only if rated.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from loom.data.dedup import content_hash
from loom.data.pii import scrub
from loom.errors import DataError
from loom.serve.store import rated_completions
from loom.util import atomic_write_text


def export_feedback(db: str | Path, out: str | Path) -> dict:
    """Writes the three files and the card into `out`; returns the card."""
    db, out = Path(db), Path(out)
    if not db.is_file():
        raise DataError(f"{db} does not exist: it is the log `loom serve` writes (RUN/serve.sqlite by default)")
    try:
        rows = rated_completions(db)
    except Exception as e:  # sqlite3.DatabaseError and friends: a file that is not loom's log
        raise DataError(f"{db} is not a loom serve log ({type(e).__name__}: {e})") from None
    scrubbed: Counter = Counter()

    def clean(text: str) -> str:
        text, found = scrub(text)
        scrubbed.update(found)
        return text

    prompts: dict[str, dict] = {}  # prompt_key -> {"messages", "up": [...], "down": [...]}
    for row in rows:
        if row["kind"] != "chat" or row["rating"] is None:
            continue
        entry = prompts.setdefault(row["prompt_key"], {
            "messages": [{"role": m["role"], "content": clean(text_of(m.get("content")))} for m in row["request"]],
            "up": [], "down": []})
        entry["up" if row["rating"] > 0 else "down"].append(clean(row["answer"]))

    eval_items, sft, pairs = [], [], []
    for key, entry in prompts.items():
        messages = entry["messages"]
        up, down = unique(entry["up"]), unique(entry["down"])
        eval_items.append({"id": key[:16], "messages": messages, "chosen": up, "rejected": down})
        sft += [{"messages": messages + [{"role": "assistant", "content": a}]} for a in up]
        pairs += [{"prompt": messages, "chosen": [{"role": "assistant", "content": a}],
                   "rejected": [{"role": "assistant", "content": b}]} for a in up for b in down if a != b]

    card = {"log": str(db), "completions": len(rows), "rated": sum(r["rating"] is not None for r in rows),
            "pii_scrubbed": dict(scrubbed), "files": {}}
    out.mkdir(parents=True, exist_ok=True)
    for name, records in (("eval.jsonl", eval_items), ("sft.jsonl", sft), ("preferences.jsonl", pairs)):
        kept = deduplicated(records)
        atomic_write_text(out / name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
        card["files"][name] = {"records": len(kept), "duplicates_dropped": len(records) - len(kept)}
    atomic_write_text(out / "card.json", json.dumps(card, indent=2) + "\n")
    return card


def text_of(content) -> str:
    """A logged message's text: a string, or OpenAI's list of text parts, or nothing."""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def unique(texts: list[str]) -> list[str]:
    return list(dict.fromkeys(texts))


def deduplicated(records: list[dict]) -> list[dict]:
    """The first of each group of records that are the same but for case and spacing."""
    seen, kept = set(), []
    for record in records:
        body = json.dumps({k: v for k, v in record.items() if k != "id"}, sort_keys=True, ensure_ascii=False)
        key = content_hash(" ".join(body.lower().split()))
        if key not in seen:
            seen.add(key)
            kept.append(record)
    return kept
