"""A suite of real users' prompts with the answers they rated: `loom eval --suite PATH.jsonl`.

The file is what `loom feedback export` writes as `eval.jsonl`, one prompt per line:

    {"id": "...", "messages": [...], "chosen": ["an answer rated up", ...], "rejected": ["one rated down", ...]}

Real prompts have no single right answer, so the suite asks how the model scores the answers
users judged. Each answer is the continuation of the prompt rendered with the chat template (an
open assistant turn), followed by <|end_of_turn|>; the model's mean log-probability per token
of it is its score. Metrics:

- `chosen/nats_per_token`: the mean negative log-likelihood per token of the answers rated up
  (lower: the model is readier to write what users liked);
- `pairs/preference_accuracy`: over every (chosen, rejected) pair of one prompt, the share in
  which the model scores the chosen answer higher (0.5 is chance), with the count of pairs.

Prompts whose longest answer does not fit the model's context are skipped and counted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from loom.chat import END_OF_TURN, jsonl_lines, parse_messages, render
from loom.errors import DataError


def read_feedback_suite(path: str | Path) -> list[dict]:
    path = Path(path)
    items = []
    for where, raw in jsonl_lines(path):
        if not isinstance(raw, dict):
            raise DataError(f'{where}: each line must be {{"messages", "chosen", "rejected"}}')
        messages = parse_messages(raw, where)
        for key in ("chosen", "rejected"):
            answers = raw.get(key, [])
            if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
                raise DataError(f"{where}: {key!r} must be a list of answer texts")
        if not raw.get("chosen") and not raw.get("rejected"):
            raise DataError(f"{where}: no rated answer (both 'chosen' and 'rejected' are empty)")
        items.append({"id": str(raw.get("id", where)), "messages": messages, "chosen": raw.get("chosen", []),
                      "rejected": raw.get("rejected", [])})
    if not items:
        raise DataError(f"{path}: holds no prompts; export some with `loom feedback export`")
    return items


def run_feedback_suite(lm, path: str | Path) -> tuple[dict, list[dict]]:
    """(metrics, one record per prompt) of the model `lm` (a `LoomLM`) on the suite at `path`."""
    tok = lm.tok
    end = tok.token_id(END_OF_TURN)
    chosen_nll, wins, pairs, skipped, records = [], 0, 0, 0, []
    for item in read_feedback_suite(path):
        prompt = render(tok, item["messages"], add_generation_prompt=True).ids
        answers = item["chosen"] + item["rejected"]
        sequences = [prompt + tok.encode(a) + [end] for a in answers]
        if max(len(s) for s in sequences) > lm.max_len:
            skipped += 1
            continue
        per_token = [float(np.mean(nll[len(prompt) - 1 :])) for nll in lm.token_nll_batch(sequences)]
        chosen, rejected = per_token[: len(item["chosen"])], per_token[len(item["chosen"]) :]
        chosen_nll += chosen
        item_wins = sum(c < r for c in chosen for r in rejected)
        wins, pairs = wins + item_wins, pairs + len(chosen) * len(rejected)
        records.append({"id": item["id"], "prompt": item["messages"][-1].content[:200],
                        "chosen_nats_per_token": chosen, "rejected_nats_per_token": rejected,
                        "pairs_won": item_wins, "pairs": len(chosen) * len(rejected)})
    metrics = {"prompts": len(records), "skipped_too_long": skipped, "pairs": pairs}
    if chosen_nll:
        metrics["chosen/nats_per_token"] = float(np.mean(chosen_nll))
    if pairs:
        metrics["pairs/preference_accuracy"] = wins / pairs
    return metrics, records
