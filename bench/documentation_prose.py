"""How much real documentation loom's text rules keep: package READMEs and licence texts.

The documents are what every Python environment already holds: the long descriptions of the
installed distributions (the body of each `*.dist-info/METADATA`, a package's README as PyPI
shows it; empty ones skipped) and the licence files shipped beside them (`*.dist-info/licenses/*`,
`*.dist-info/LICENSE*`, `COPYING*`, `NOTICE*`; identical texts counted once). This is real
third-party documentation, nothing downloaded. loom's own distribution is left out.

Each document goes through what the clean stage does to a text document: normalization, C4
notice lines, then the text rules, with the document's markup as a source would give it: a
README's `Description-Content-Type` (`text/markdown` -> markdown, `text/x-rst` or none -> rst,
the core metadata specification's default; `text/plain` -> plain).
Licence files are "plain" (or markdown / rst by extension), as a `text_dir` or `code_repo`
source reads them (`loom.data.sources.markup_of`). It runs the rules at the default thresholds
and at the quickstart preset's `[quality.text]`, and, with `--baseline FILE`, also a second copy
of `loom/data/quality.py` (e.g. main's: `git show HEAD:loom/data/quality.py > /tmp/q.py`), given
no markup if its `text_rejection` takes none, at the defaults and at the `[quality.text]` of
`--baseline-preset` (that version's quickstart.toml; default: this one's). It prints the share
dropped and the rules that dropped them.

    python bench/documentation_prose.py [--site-packages DIR ...] [--baseline FILE [--baseline-preset TOML]]
        [--show RULE]
"""

from __future__ import annotations

import argparse
import email
import email.policy
import glob
import hashlib
import importlib.util
import inspect
import os
import sys
import sysconfig
import tomllib
from collections import Counter
from dataclasses import asdict

from loom.config import load_config
from loom.data.filetypes import markup_of
from loom.data.normalize import normalize_text

LICENCE_PREFIXES = ("LICEN", "COPYING", "NOTICE")


def readme_markup(content_type: str | None) -> str:
    kind = (content_type or "text/x-rst").split(";")[0].strip().lower()
    return {"text/markdown": "markdown", "text/x-rst": "rst"}.get(kind, "plain")


def documents(site_dirs: list[str]) -> dict[str, list[tuple[str, str, str | None]]]:
    """{"readmes": [(name, text, markup)], "licences": [...]} from the distributions in `site_dirs`."""
    readmes, licences, seen = [], [], set()
    for site in site_dirs:
        for meta in sorted(glob.glob(os.path.join(site, "*.dist-info", "METADATA"))):
            with open(meta, "rb") as f:
                msg = email.message_from_binary_file(f, policy=email.policy.compat32)
            name = msg.get("Name") or os.path.basename(os.path.dirname(meta))
            if name.lower() == "loom":
                continue
            body = msg.get_payload()
            if not isinstance(body, str) or not body.strip():
                body = msg.get("Description") or ""  # metadata 1.x keeps it in a header
            if body.strip():
                readmes.append((name, body, readme_markup(msg.get("Description-Content-Type"))))
            info = os.path.dirname(meta)
            for path in sorted(glob.glob(os.path.join(info, "**", "*"), recursive=True)):
                if not os.path.isfile(path) or not os.path.basename(path).upper().startswith(LICENCE_PREFIXES):
                    continue
                try:
                    with open(path, encoding="utf-8") as f:
                        text = f.read()
                except (OSError, UnicodeDecodeError):
                    continue
                digest = hashlib.sha256(text.strip().encode()).hexdigest()
                if text.strip() and digest not in seen:
                    seen.add(digest)
                    licences.append((os.path.relpath(path, site), text, markup_of(path)))
    return {"readmes": readmes, "licences": licences}


def load_quality(path: str):
    spec = importlib.util.spec_from_file_location("baseline_quality", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def rejection(quality, text: str, markup: str | None, cfg) -> str | None:
    text = normalize_text(text)
    if not text.strip():
        return "normalize.empty"
    text, _ = quality.c4_remove_notice_lines(text, cfg)
    if "markup" in inspect.signature(quality.text_rejection).parameters:
        return quality.text_rejection(text, cfg, markup)
    return quality.text_rejection(text, cfg)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--site-packages", nargs="+", default=[sysconfig.get_paths()["purelib"]],
                   help="directories holding *.dist-info (default: this interpreter's site-packages)")
    p.add_argument("--baseline", help="another copy of loom/data/quality.py to compare with")
    p.add_argument("--baseline-preset", metavar="TOML", help="the baseline's quickstart preset (default: this one's)")
    p.add_argument("--show", metavar="RULE", help="print the names of the documents this rule drops")
    args = p.parse_args()

    from loom.data import quality as current

    preset = asdict(load_config("quickstart").quality.text)
    defaults = asdict(current.TextQualityConfig())
    runs = [("loom", current, "default", {}), ("loom", current, "quickstart", preset)]
    if args.baseline:
        baseline = load_quality(args.baseline)
        base_preset = preset
        if args.baseline_preset:
            with open(args.baseline_preset, "rb") as f:
                base_preset = tomllib.load(f).get("quality", {}).get("text", {})
        runs += [("baseline", baseline, "default", {}), ("baseline", baseline, "quickstart", base_preset)]
    docs = documents(args.site_packages)
    print(f"site-packages: {', '.join(args.site_packages)}")
    print(f"quickstart preset [quality.text] differs from the defaults in: "
          f"{ {k: v for k, v in preset.items() if defaults[k] != v} or 'nothing'}")
    print()
    print("| documents | rules | thresholds | dropped | dropped by |")
    print("|---|---|---|---|---|")
    for kind, items in docs.items():
        for label, quality, where, values in runs:
            known = {k: v for k, v in values.items() if k in quality.TextQualityConfig.__dataclass_fields__}
            cfg = quality.TextQualityConfig(**known)
            outcome = Counter()
            for name, text, markup in items:
                rule = rejection(quality, text, markup, cfg)
                outcome[rule or "kept"] += 1
                if rule and rule == args.show and label == "loom" and where == "default":
                    print(f"  {args.show}: {name}")
            dropped = len(items) - outcome["kept"]
            by = ", ".join(f"{r} {n}" for r, n in outcome.most_common() if r != "kept")
            print(f"| {kind} ({len(items)}) | {label} | {where} | {dropped} ({dropped / max(1, len(items)):.0%}) "
                  f"| {by or '-'} |")

if __name__ == "__main__":
    main()
