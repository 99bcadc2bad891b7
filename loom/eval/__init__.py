"""Evaluation: held-out bits per byte, generated reasoning suites, HumanEval in a sandbox, and an
lm-evaluation-harness adapter (`loom.eval.harness`, optional).

Public surface: `LoomLM` (a trained model that scores and generates), `bits_per_byte`,
`evaluate_run` / `compare_runs` (what `loom eval` runs), `resolve_suites`; and in
`loom.eval.contamination`, `item_ngrams` (what `loom data build` is handed to keep test items out
of training data).
"""

from loom.eval.bpb import bits_per_byte
from loom.eval.lm import LoomLM
from loom.eval.run import compare_runs, evaluate_run, resolve_suites, results_table

__all__ = ["LoomLM", "bits_per_byte", "compare_runs", "evaluate_run", "resolve_suites", "results_table"]
