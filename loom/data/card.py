"""The data card: what went into a dataset, what came out, and why everything else did not.

Written by `build_dataset` into `data.dir` as `data_card.json` (every number), `data_card.md`
(the same for people) and two plots: `card_outcomes.png` (kept / dropped per rule / duplicates /
unreadable) and `card_lengths.png` (document length in tokens per domain). `loom data card`
prints the markdown. The accounting adds up: inputs = kept + dropped + duplicates + unreadable,
which `write_data_card` checks before writing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from loom.data.shards import open_index
from loom.errors import DataError
from loom.util import atomic_write_text

CARD_JSON, CARD_MD = "data_card.json", "data_card.md"


def check_accounting(acct: dict) -> None:
    parts = acct["kept"] + acct["dropped"] + acct["duplicates"] + acct["unreadable"]
    if parts != acct["inputs"]:
        raise DataError(f"data card accounting does not add up: {acct['inputs']} inputs but {parts} outcomes")
    if sum(acct["dropped_by_rule"].values()) != acct["dropped"]:
        raise DataError("data card accounting: drops per rule do not add up to the drops")


def _length_summary(data_dir: Path, shards: dict) -> dict:
    """Per domain: document count and token-length percentiles over both splits of the shards
    (documents repeated by the mixture count once per copy)."""
    lengths: dict[str, list[np.ndarray]] = {}
    domains = shards["domains"]
    for split in ("train", "val"):
        for f in shards["splits"][split]["files"]:
            index = open_index(data_dir / "shards", f)
            for code in np.unique(index[:, 3]) if len(index) else []:
                lengths.setdefault(domains[code], []).append(index[index[:, 3] == code, 1])
    summary = {}
    for domain, parts in sorted(lengths.items()):
        values = np.concatenate(parts)
        p = np.percentile(values, [10, 50, 90]).round().astype(int).tolist()
        summary[domain] = {"docs": int(len(values)), "tokens_p10": p[0], "tokens_p50": p[1], "tokens_p90": p[2],
                           "tokens_max": int(values.max())}
    return summary, {d: np.concatenate(v) for d, v in lengths.items()}


def build_card(clean: dict, shards: dict, lengths: dict) -> dict:
    acct = clean["accounting"]
    check_accounting(acct)
    code_languages = sorted({d.split(":", 1)[1] for d in acct["by_domain"] if d.startswith("code:")})
    return {
        "inputs": acct["inputs"],
        "kept": acct["kept"],
        "dropped": acct["dropped"],
        "dropped_by_rule": dict(sorted(acct["dropped_by_rule"].items(), key=lambda kv: -kv[1])),
        "duplicates": acct["duplicates"],
        "duplicates_by_kind": acct["duplicates_by_kind"],
        "near_duplicate_jaccard": acct.get("near_jaccard"),
        "near_duplicate_search": acct.get("near_search"),
        "unreadable": acct["unreadable"],
        "unreadable_examples": acct["unreadable_list"],
        "redactions": acct["redactions"],
        "c4_lines_removed": acct["c4_lines_removed"],
        "decontamination": _decontamination_summary(clean.get("decontamination"), acct),
        "by_source": acct["by_source"],
        "by_domain": acct["by_domain"],
        "diversity": {"domains": sorted(acct["by_domain"]), "code_languages": code_languages,
                      "sources": sorted(acct["by_source"]), "lengths": lengths},
        "mixture": shards.get("mixture", {}),
        "tokens": {split: shards["splits"][split]["tokens_by_domain"] for split in ("train", "val")},
        "token_share": {split: token_share(shards["splits"][split]["tokens_by_domain"]) for split in ("train", "val")},
        "clean_seconds": acct.get("seconds"),
    }


def token_share(tokens_by_domain: dict[str, int]) -> dict[str, float]:
    """Share of the tokens per domain group ("text", "code"), from tokens per domain."""
    groups: dict[str, int] = {}
    for domain, n in tokens_by_domain.items():
        groups[domain.split(":", 1)[0]] = groups.get(domain.split(":", 1)[0], 0) + n
    total = sum(groups.values())
    return {g: n / total for g, n in sorted(groups.items())} if total else {}


def _share_line(card: dict) -> str:
    """The card's first line: what the model is trained on, text against code, and how often
    the mixture repeats each group's documents."""
    share = card.get("token_share", {}).get("train", {})
    total = sum(card["tokens"]["train"].values())
    parts = " and ".join(f"{share[g]:.1%} {g}" for g in sorted(share, key=lambda g: (g != "text", g)))
    mixture = card.get("mixture") or {}
    epochs = mixture.get("epochs", {})
    def text_first(d: dict) -> list:
        return sorted(d.items(), key=lambda kv: (kv[0] != "text", kv[0]))

    seen = " and ".join(f"each {g} document {e:.2f} times" for g, e in text_first(epochs))
    if mixture.get("weights"):
        weights = ", ".join(f"{g} {w:g}" for g, w in text_first(mixture["weights"]))
        how = f"mixture weights {weights}: a pass over the training split sees {seen}"
    else:
        how = "natural proportions (no `data.mixture`): each document once per pass"
    return f"Training split: {total:,} tokens, {parts or 'none'}; {how}."


def _decontamination_summary(settings: dict | None, acct: dict) -> dict | None:
    if not settings:
        return None
    return {"suites": settings["suites"], "ngram": settings["ngram"], "test_ngrams": settings["ngrams"],
            "dropped": acct["dropped_by_rule"].get("decontamination", 0)}


def _near_jaccard_lines(dist: dict | None, search: dict | None, table) -> list[str]:
    """How similar each removed near duplicate is to the document kept in its place."""
    if not dist or not dist["all"]["pairs"]:
        return []
    threshold = dist["all"]["threshold"]
    lines = ["Near duplicates: exact Jaccard similarity of the word shingles (`dedup.shingle_size`-grams) of each "
             f"removed document with those of the document kept in its place (`dedup.min_jaccard` = {threshold}).",
             ""]
    edges = [f"{lo:g}-{hi:g}" for lo, hi, _ in dist["all"]["histogram"]]
    rows = []
    for group, d in dist.items():
        rows.append([group, f"{d['pairs']:,}", *(f"{d.get(k, 0):.3f}" for k in ("min", "p10", "median", "p90", "max")),
                     f"{d['below_threshold']:,}", *(f"{c:,}" for _, _, c in d["histogram"])])
    lines += table(["removed", "pairs", "min", "p10", "median", "p90", "max", f"below {threshold:g}", *edges], rows)
    if search:
        lines += [f"Candidates: {search['documents_with_candidates']:,} documents shared a band bucket with a kept "
                  f"one; {search['signature_comparisons']:,} signature and {search['exact_comparisons']:,} exact "
                  f"comparisons ({search.get('seconds', 0):.1f}s).", ""]
    return lines


def render_markdown(card: dict) -> str:
    def table(header: list[str], rows: list[list]) -> list[str]:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        return out + [""]

    n = max(1, card["inputs"])
    lines = ["# Data card", "", _share_line(card), "",
             f"{card['inputs']:,} inputs: every one is kept, dropped, a duplicate or unreadable.", ""]
    lines += table(["outcome", "inputs", "share"], [
        [k, f"{card[k]:,}", f"{card[k] / n:.1%}"] for k in ("kept", "dropped", "duplicates", "unreadable")])
    if card["dropped_by_rule"]:
        lines += ["## Dropped, by rule", ""]
        lines += table(["rule", "documents"], [[r, f"{c:,}"] for r, c in card["dropped_by_rule"].items()])
    if card.get("decontamination"):
        d = card["decontamination"]
        lines += [f"Decontamination: {d['dropped']:,} documents shared a {d['ngram']}-word n-gram with the test "
                  f"items of {', '.join(d['suites'])} ({d['test_ngrams']:,} n-grams) and were dropped.", ""]
    lines += ["## Duplicates", ""]
    lines += table(["kind", "documents"], [[k, f"{c:,}"] for k, c in sorted(card["duplicates_by_kind"].items())])
    lines += _near_jaccard_lines(card.get("near_duplicate_jaccard"), card.get("near_duplicate_search"), table)
    lines += ["## Per source", ""]
    statuses = ["kept", "dropped", "duplicate_exact", "duplicate_near", "unreadable"]
    lines += table(["source", *statuses], [[s, *(c.get(k, 0) for k in statuses)] for s, c in card["by_source"].items()])
    lines += ["## Tokens per domain", ""]
    mixture = card["mixture"]
    lines += table(["domain", "train tokens", "val tokens"], [
        [d, f"{card['tokens']['train'].get(d, 0):,}", f"{card['tokens']['val'].get(d, 0):,}"]
        for d in sorted(set(card["tokens"]["train"]) | set(card["tokens"]["val"]))])
    if mixture:
        lines += [f"Mixture weights {mixture.get('weights') or 'natural'}; epochs per domain group in the training "
                  f"split: " + ", ".join(f"{g} {e:.2f}" for g, e in mixture.get("epochs", {}).items()), ""]
    lines += ["## Lengths (tokens per document)", ""]
    lines += table(["domain", "docs", "p10", "median", "p90", "max"], [
        [d, v["docs"], v["tokens_p10"], v["tokens_p50"], v["tokens_p90"], v["tokens_max"]]
        for d, v in card["diversity"]["lengths"].items()])
    if card["redactions"] or card["c4_lines_removed"]:
        lines += ["## Redactions", ""]
        lines += table(["kind", "replaced"], [[k, f"{v:,}"] for k, v in sorted(card["redactions"].items())]
                       + [["C4 notice lines removed", f"{card['c4_lines_removed']:,}"]])
    if card["unreadable_examples"]:
        lines += ["## Unreadable inputs", ""]
        lines += table(["source", "file", "line", "error"], [
            [u["source"], u["file"], u["line"] if u["line"] is not None else "", u["error"]]
            for u in card["unreadable_examples"][:50]])
        if card["unreadable"] > 50:
            lines += [f"({card['unreadable'] - 50:,} more in data_card.json and the build log)", ""]
    lines += ["![outcomes](card_outcomes.png)", "", "![lengths](card_lengths.png)", ""]
    return "\n".join(lines)


def _plots(data_dir: Path, card: dict, lengths: dict[str, np.ndarray]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["kept", *[f"dropped: {r}" for r in card["dropped_by_rule"]],
              *[f"duplicate: {k}" for k in card["duplicates_by_kind"]], "unreadable"]
    values = [card["kept"], *card["dropped_by_rule"].values(), *card["duplicates_by_kind"].values(),
              card["unreadable"]]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(labels) + 1.2))
    ax.barh(labels[::-1], values[::-1], color="#4c72b0")
    ax.set_xlabel("inputs")
    ax.set_title("What happened to every input")
    fig.tight_layout()
    fig.savefig(data_dir / "card_outcomes.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    for domain, values in sorted(lengths.items()):
        ax.hist(np.log10(np.maximum(values, 1)), bins=40, alpha=0.6, label=domain)
    ax.set_xlabel("log10(tokens per document)")
    ax.set_ylabel("documents")
    ax.legend()
    ax.set_title("Document lengths by domain")
    fig.tight_layout()
    fig.savefig(data_dir / "card_lengths.png", dpi=100)
    plt.close(fig)


def write_data_card(data_dir: Path, clean: dict, shards: dict) -> dict:
    summary, lengths = _length_summary(data_dir, shards)
    card = build_card(clean, shards, summary)
    atomic_write_text(data_dir / CARD_JSON, json.dumps(card, indent=2, sort_keys=True))
    atomic_write_text(data_dir / CARD_MD, render_markdown(card))
    _plots(data_dir, card, lengths)
    return card


def read_data_card(data_dir: str | Path) -> str:
    path = Path(data_dir) / CARD_MD
    if not path.is_file():
        raise DataError(f"no data card at {path}: build the dataset with `loom data build`")
    return path.read_text()
