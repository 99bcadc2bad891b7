"""The `loom` command: thin, one function per subcommand, no logic of its own.

Errors a user can fix (`LoomError`) are printed as one message without a traceback; `--debug`
anywhere on the command line shows tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from loom.errors import LoomError


def _at_least(low: float, kind=int):
    """An argparse type: a number of `kind` that is `low` or more."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not value >= low:  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be {low} or more, not {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="quickstart", help="TOML file or preset name (default: quickstart)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a setting, e.g. --set train.steps=100 (repeatable)")


def _load(args, extra_overrides=()):
    from loom.config import load_config

    return load_config(args.config, [*args.overrides, *extra_overrides])


def cmd_quickstart(args) -> None:
    from loom.pipeline import quickstart

    quickstart(_load(args))


def cmd_data_build(args) -> None:
    from loom.data.execute import Submitted
    from loom.pipeline import build_data

    overrides = [f'data.executor="{args.executor}"'] if args.executor else []
    try:
        print(build_data(_load(args, overrides), force=args.force))
    except Submitted as submitted:
        print(submitted)


def cmd_data_run_task(args) -> None:
    from loom.data.clean import run_clean_task

    acct = run_clean_task(_load(args), args.task)
    print(f"task {args.task}: {acct['inputs']:,} inputs in {acct['seconds']:.1f}s")


def cmd_data_card(args) -> None:
    from loom.pipeline import data_card_text

    print(data_card_text(args.target))


def cmd_tokenizer_train(args) -> None:
    from loom.data import clean_corpus, train_corpus_tokenizer
    from loom.pipeline import test_ngrams

    cfg = _load(args)
    print(train_corpus_tokenizer(cfg, clean_corpus(cfg, test_ngrams(cfg))).path)


def cmd_doctor(args) -> int:
    from loom import doctor

    checks = doctor.run_checks(args.config, args.overrides, quick=args.quick)
    rank = int(os.environ.get("RANK", "0"))
    failed = any(c.status == "fail" for c in checks)
    if rank == 0:
        print(doctor.to_json(checks) if args.json else doctor.render(checks))
    elif failed:
        print(f"rank {rank}:\n{doctor.render([c for c in checks if c.status == 'fail'])}", file=sys.stderr)
    from loom.train.distributed import shutdown

    shutdown()
    return 1 if failed else 0


def cmd_plan(args) -> int:
    from loom.config import load_config
    from loom.train import plan

    cfg = load_config(args.config, args.overrides)
    result = plan.plan_run(cfg, args.device, args.devices, args.mfu, budget=args.budget or 0.0,
                           device_hours=args.device_hours or 0.0, flops=args.flops or 0.0, tokens=args.tokens or 0.0,
                           peak_tflops=args.peak_tflops or 0.0, price=args.price, memory_gb=args.memory_gb or 0.0)
    print(plan.render(result, cfg.cost.currency))
    if args.out:
        from loom.util import atomic_write_text

        atomic_write_text(args.out, result["config"].to_toml())
        print(f"config written to {args.out}")
    return 0 if result["fits"] else 2


def cmd_train(args) -> None:
    from loom.train import train

    summary = train(_load(args), resume=args.resume)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one report, not one per process
        if summary["already_complete"]:
            print(f"run already complete at step {summary['steps']} (trained earlier): validation loss "
                  f"{summary['first_val_loss']:.4f} -> {summary['final_val_loss']:.4f}; run in {summary['run_dir']}")
            return
        state = "stopped after" if summary["interrupted"] else "trained"
        print(f"{state} {summary['steps']} steps: validation loss {summary['final_val_loss']:.4f}; "
              f"run in {summary['run_dir']}")


def cmd_launch(args) -> int:
    from loom.launch import after_srun, launch

    cfg = _load(args)
    if args.after_srun is not None:  # inside the Slurm job, once srun returned
        return after_srun(cfg, args.after_srun, say=lambda line: print(line, file=sys.stderr, flush=True))
    print(launch(cfg, args.engine))
    return 0


def cmd_status(args) -> None:
    from loom.launch import status_json, status_table

    print(status_json(args.dir) if args.json else status_table(args.dir), end="")


def cmd_sft(args) -> None:
    from loom.train.sft import sft, sft_config

    if bool(args.data) == args.mix:
        raise LoomError("loom sft needs --data FILE.jsonl (conversations) or --mix (loom's generated mix), not "
                        + ("both" if args.mix else "neither"))
    data = args.data
    if args.mix:
        from loom.eval.chat_data import chat_mix

        cfg, _ = sft_config(args.run, args.overrides)
        path = cfg.run_dir / "chat-mix.jsonl"
        if not path.is_file():  # the mix is deterministic: a resumed run reuses the one it trained on
            print(f"[loom] generating the instruction-tuning mix -> {path}", file=sys.stderr, flush=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            card = chat_mix(path, cfg.eval, seed=cfg.run.seed)
            print(f"[loom] mix: {card['conversations']:,} conversations {card['by_kind']}; dropped as "
                  f"contaminated: {card['dropped_as_contaminated'] or 'none'}", file=sys.stderr, flush=True)
        data = [path]
    summary = sft(args.run, data, args.overrides, resume="never" if args.fresh else "auto")
    state = "stopped after" if summary.get("interrupted") else "trained"
    print(f"{state} {summary['steps']} steps of SFT: validation loss {summary['final_val_loss']:.4f} on "
          f"assistant tokens; run in {summary['run_dir']}")


def cmd_chat(args) -> None:
    from loom.pipeline import sample_settings
    from loom.serve import chat_terminal

    settings = sample_settings(args.overrides, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                               top_k=args.top_k, top_p=args.top_p)
    chat_terminal(args.run, settings, seed=args.seed, device=args.device)


def cmd_serve(args) -> None:
    import os

    from loom.pipeline import sample_settings
    from loom.serve.api import serve

    settings = sample_settings(args.overrides, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                               top_k=args.top_k, top_p=args.top_p)
    serve(args.run, host=args.host, port=args.port, api_key=args.api_key or os.environ.get("LOOM_API_KEY"),
          log=not args.no_log, db=args.db, max_batch=args.max_batch, max_waiting=args.max_waiting,
          cors_origins=args.cors_origin, model_name=args.model_name, sampling=settings, device=args.device,
          say=lambda line: print(line, flush=True))


def cmd_feedback_export(args) -> None:
    from loom.serve.feedback import export_feedback

    if not args.db and not args.run:
        raise LoomError("loom feedback export needs --run RUN (its serve.sqlite) or --db FILE")
    db = Path(args.db) if args.db else Path(args.run) / "serve.sqlite"
    card = export_feedback(db, args.out)
    files = ", ".join(f"{name} {f['records']} ({f['duplicates_dropped']} duplicates dropped)"
                      for name, f in card["files"].items())
    scrubbed = sum(card["pii_scrubbed"].values())
    print(f"{card['rated']} rated of {card['completions']} answers in {db} -> {args.out}: {files}; "
          f"{scrubbed} PII spans scrubbed")


def cmd_export_hf(args) -> None:
    from loom.export import export_hf

    export_hf(args.run, args.out, dtype=args.dtype)


def cmd_export_gguf(args) -> None:
    from loom.export.gguf import export_gguf

    export_gguf(args.run, args.out, dtype=args.dtype)


def cmd_import_hf(args) -> None:
    from loom.export.hf_import import import_hf

    import_hf(args.model, args.out)


def cmd_sample(args) -> None:
    from loom.pipeline import sample_from_run, sample_settings

    settings = sample_settings(args.overrides, prompt=args.prompt, max_new_tokens=args.max_new_tokens,
                               temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    pieces = sample_from_run(args.run, settings.prompt, settings, seed=args.seed, device=args.device,
                             log=lambda line: print(line, file=sys.stderr, flush=True))
    print(settings.prompt, end="", flush=True)  # only once the run has loaded: errors come first
    for piece in pieces:
        print(piece, end="", flush=True)
    print()


def cmd_consolidate(args) -> None:
    from loom.checkpoint import consolidate

    out, step = consolidate(args.run, args.out)
    print(f"wrote the weights of {args.run} at step {step} to {out}")


def cmd_eval(args) -> int:
    from loom.eval.run import evaluate_run, suite_names
    from loom.util import torch_device

    if args.list:
        from loom.eval.suites import SUITES

        print("bpb          held-out bits per byte per domain on the validation shards")
        for name, suite in SUITES.items():
            print(f"{name:12s} {suite.description} (default difficulty {suite.default_difficulty})")
        print("humaneval    HumanEval pass@k, completions run in the sandbox")
        print("groups: all, reasoning")
        return 0
    torch_device(args.device)
    if not args.run:
        raise LoomError("loom eval needs --run RUN (a run directory), e.g. loom eval --run runs/quickstart "
                        f"--suite all; suites: {', '.join(['all', 'reasoning', *suite_names()])}")
    evaluate_run(args.run, args.suite.split(","), args.overrides, device=args.device)
    print((Path(args.run) / "eval" / "results.md").read_text(), end="")
    return 0


def cmd_eval_compare(args) -> int:
    from loom.eval.run import compare_runs

    print(compare_runs(args.run_a, args.run_b), end="")
    return 0


def cmd_eval_emit(args) -> int:
    from loom.eval.run import emit_training_split

    if args.chat:
        from loom.config import EvalConfig
        from loom.eval.chat_data import chat_mix

        card = chat_mix(args.out, EvalConfig(), suite_items=args.items or 400, seed=args.seed)
        print(f"[loom] wrote {card['conversations']:,} conversations {card['by_kind']} to {args.out}; dropped as "
              f"contaminated: {card['dropped_as_contaminated'] or 'none'}")
        return 0
    if not args.suite:
        raise LoomError("loom eval emit needs --suite NAMES (or --chat for the instruction-tuning mix)")
    names = args.suite.split(",")
    n = emit_training_split(names, args.out, args.items or 1000, args.difficulty, args.seed)
    print(f"[loom] wrote {n:,} training documents of {', '.join(names)} to {args.out}")
    return 0


def cmd_eval_harness(args) -> int:
    from loom.eval.harness import run_harness

    results = run_harness(args.run, args.tasks.split(","), include_path=args.include_path, limit=args.limit,
                          device=args.device)
    print(json.dumps(results.get("results", results), indent=2, default=str))
    return 0


def _backend(args):
    from loom.reason import make_backend
    from loom.util import torch_device

    torch_device(args.device)  # a device that is not here is refused before any model loads

    return make_backend(args.backend, **({"device": args.device} if args.backend.startswith(("loom:", "hf:")) else {}))


def _budget(args):
    from loom.reason import Budget

    return Budget(max_model_calls=args.max_calls, max_tokens=args.max_tokens, max_seconds=args.max_seconds)


def cmd_reason_ask(args) -> int:
    from loom.reason import solve
    from loom.reason.strategies import resolve_program

    program = resolve_program(args.program) if args.program else None
    if program is not None and args.strategy != "graph":
        raise LoomError("--program runs with --strategy graph (the default)")
    workdir = args.workdir or _default_workdir("reason")
    result = solve(args.question, _backend(args), args.strategy, program, workdir, rag_index=args.rag, k=args.k,
                   samples=args.samples, budget=_budget(args), max_parallel=args.parallel, resume=args.resume)
    plan = result.get("plan")
    if plan and plan["fallback"]:
        print(f"[loom] the planner got no sub-questions from the model in {plan['attempts']} attempt(s); "
              "the question was asked directly", file=sys.stderr)
    if result["status"] == "done":
        print(result["answer"])
    detail = f"; {result['error'] or result['budget']}" if result["error"] or result["budget"] else ""
    print(f"[loom] {result['status']}{detail}: {result['model_calls']} model calls, {result['tokens']} tokens, "
          f"{result['seconds']:.1f}s; trace {workdir}/trace.jsonl, picture {workdir}/graph.html", file=sys.stderr)
    return 0 if result["status"] == "done" else 1


def _default_workdir(kind: str) -> str:
    import time

    return f"runs/{kind}/{time.strftime('%Y%m%d-%H%M%S')}"


def cmd_reason_data(args) -> int:
    from loom.reason.plan_data import planning_documents
    from loom.util import atomic_write_text

    forms = tuple(f for f in args.forms.split(",") if f)
    try:
        documents = list(planning_documents(args.plans, args.steps, args.max_difficulty, args.seed, forms))
    except ValueError as e:
        raise LoomError(f"--forms: {e}") from None
    atomic_write_text(Path(args.out), "".join(json.dumps({"text": d}) + "\n" for d in documents))
    print(f"{len(documents)} documents ({sum(d.startswith('# Question') for d in documents)} plans) -> {args.out}")
    return 0


def cmd_reason_eval(args) -> int:
    from loom.reason import evaluate_strategies, strategies_plot, strategies_table
    from loom.reason.strategies import resolve_program

    program = resolve_program(args.program) if args.program else None
    difficulties = [int(d) for d in args.difficulty.split(",")] if args.difficulty else None
    backend, rows = _backend(args), []
    for seed in range(args.seed, args.seed + args.seeds):  # each seed draws its own test items
        workdir = args.workdir and (Path(args.workdir) / f"seed{seed}" if args.seeds > 1 else args.workdir)
        rows += evaluate_strategies(args.suite, backend, args.strategies.split(","), difficulties, args.items, seed,
                                    program, workdir, args.samples)
    print(strategies_table(rows), end="")
    if args.out:
        from loom.util import atomic_write_text

        atomic_write_text(Path(args.out), json.dumps(rows, indent=2) + "\n")
    if args.plot:
        print(f"[loom] accuracy against length -> {strategies_plot(rows, args.plot)}")
    return 0


def cmd_index_build(args) -> int:
    from loom.reason.retrieval import build_index, corpus_passages, folder_passages

    if bool(args.dir) == bool(args.config):
        raise LoomError("loom index build needs --dir FOLDER (.txt, .md, .rst files) or --config C (a loom corpus)")
    items = folder_passages(args.dir, args.words) if args.dir else corpus_passages(_load(args), args.words)
    info = build_index(args.out, items, {"from": args.dir or args.config, "words_per_passage": args.words})
    print(f"[loom] indexed {info['passages']:,} passages -> {args.out}")
    return 0


def cmd_index_search(args) -> int:
    from loom.reason.retrieval import search

    for hit in search(args.index, args.query, args.k):
        print(f"{hit['score']:.3f}  {hit['id']}  {hit['text'][:160]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loom", description="From raw text and code to a trained, sampling language model.",
        epilog="Add --debug anywhere to see tracebacks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("quickstart", help="build the embedded corpus, train a small model, print a sample",
                       description="Builds the standard-library corpus and tokenizer, trains the quickstart "
                                   "model on the CPU in minutes, and prints a sample.")
    _config_args(p)
    p.set_defaults(func=cmd_quickstart)

    data = sub.add_parser("data", help="data commands").add_subparsers(dest="data_command", required=True,
                                                                         metavar="COMMAND")
    p = data.add_parser("build", help="clean, deduplicate, mix and tokenize the sources into token shards",
                        description="Reads every [[data.sources]] input, normalizes it, applies the [quality] "
                                    "rules, scrubs secrets and PII, removes exact and near duplicates, trains the "
                                    "tokenizer if needed, writes mixed token shards and a data card to data.dir.")
    _config_args(p)
    p.add_argument("--force", action="store_true", help="rebuild even if the shards are up to date")
    p.add_argument("--executor", choices=["local", "ray", "slurm"],
                   help="where the cleaning tasks run (default: data.executor, local)")
    p.set_defaults(func=cmd_data_build)
    p = data.add_parser("run-task", help="run one cleaning task of a planned build (what Slurm array tasks run)",
                        description="Runs task TASK of the plan in data.dir/clean.work/, which `loom data build "
                                    "--executor slurm` writes; a finished task is not run again.")
    _config_args(p)
    p.add_argument("--task", type=_at_least(0), required=True, help="the task's index in the plan")
    p.set_defaults(func=cmd_data_run_task)
    p = data.add_parser("card", help="print the data card of a run or data directory")
    p.add_argument("target", help="a run directory (runs/NAME) or a data directory (data/NAME)")
    p.set_defaults(func=cmd_data_card)

    tok = sub.add_parser("tokenizer", help="tokenizer commands").add_subparsers(dest="tok_command", required=True,
                                                                                metavar="COMMAND")
    p = tok.add_parser("train", help="train the BPE tokenizer on a sample of the corpus")
    _config_args(p)
    p.set_defaults(func=cmd_tokenizer_train)

    p = sub.add_parser("train", help="train a model on built shards (under torchrun for several processes)",
                       description="Trains on the shards at data.dir. Continues the run's newest valid "
                                   "checkpoint when there is one. Launch with `torchrun --nproc_per_node N "
                                   "-m loom train ...` for data parallelism.")
    _config_args(p)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", dest="resume", action="store_const", const="always", default="auto",
                       help="require a checkpoint to continue from")
    group.add_argument("--no-resume", dest="resume", action="store_const", const="never",
                       help="refuse to continue an existing run")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sft", help="fine-tune a trained run on conversations (loss on assistant tokens only)",
                       description="A new run (default name <RUN>-sft) that starts from RUN's newest weights and "
                                   "trains on conversations in OpenAI/TRL JSONL ({\"messages\": [...]}), packed "
                                   "into train.seq_len windows; its own [train] schedule via --set. See "
                                   "docs/chat.md.")
    p.add_argument("--run", required=True, help="the base run directory, e.g. runs/quickstart")
    p.add_argument("--data", action="append", default=[], metavar="FILE.jsonl",
                   help="conversations, one per line (repeatable)")
    p.add_argument("--mix", action="store_true",
                   help="train on loom's generated mix instead (the suites' training splits, standard-library "
                        "questions, greetings; decontaminated), written to the SFT run's chat-mix.jsonl")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="a setting of the SFT run, e.g. --set train.steps=200 --set train.lr=3e-4 (repeatable)")
    p.add_argument("--fresh", action="store_true", help="refuse to continue an existing SFT run")
    p.set_defaults(func=cmd_sft)

    p = sub.add_parser("launch", help="hand a training run to Slurm (sbatch) or a Ray cluster",
                       description="--engine slurm writes RUN/launch/job.sbatch from the [launch] settings (srun "
                                   "starting torchrun on each node; requeued after Slurm's warning signal, and the "
                                   "requeued job resumes) and submits it. --engine ray trains on a Ray cluster with "
                                   "Ray Train and returns when the run ends. See docs/operations.md.")
    _config_args(p)
    p.add_argument("--engine", choices=["slurm", "ray"], help="where the run goes (default: launch.engine, slurm)")
    p.add_argument("--after-srun", type=int, metavar="STATUS",
                   help="inside the Slurm job (what the sbatch script runs after srun): requeue the job when the "
                        "run stopped on a signal before train.steps")
    p.set_defaults(func=cmd_launch)

    p = sub.add_parser("status", help="the runs under a directory: step, loss, tokens/s, cost, heartbeat, events, job",
                       description="One line per run under DIR (or DIR itself when it is a run): step of "
                                   "train.steps, last loss, tokens/s and cost, heartbeat age, health events, and "
                                   "the Slurm job's state from squeue/sacct when loom launch submitted it.")
    p.add_argument("dir", metavar="DIR", help="a run directory, or the directory holding runs (e.g. runs)")
    p.add_argument("--json", action="store_true", help="print the runs as JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("doctor", help="preflight checks of the machine, data and config (pass/warn/fail)",
                       description="Checks Python, torch, CUDA, each device, matrix-product throughput, GPU errors, "
                                   "collectives (under torchrun), the run directory, the data shards and the "
                                   "loader. Exits non-zero when a check fails; each problem comes with a fix.")
    _config_args(p)
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.add_argument("--quick", action="store_true", help="skip reading every shard for its checksum")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("plan", help="size a run from a budget, or cost a config: time, memory, money",
                       description="With --budget, --device-hours or --flops: the compute-optimal (Chinchilla, 20 "
                                   "tokens per parameter) model and tokens that budget buys, as a config. With "
                                   "--tokens: what training the config's model on that many tokens takes. Exits 2 "
                                   "when the plan does not fit in the devices' memory.")
    _config_args(p)
    p.add_argument("--budget", type=float, help="money to spend, in cost.currency")
    p.add_argument("--device-hours", type=float, help="device-hours to spend")
    p.add_argument("--flops", type=float, help="training FLOPs to spend")
    p.add_argument("--tokens", type=float, help="tokens to train the config's model on")
    p.add_argument("--device", default="h100", help="device name, e.g. h100, h200, a100, l4 (default: h100)")
    p.add_argument("--devices", type=_at_least(1), default=1, help="number of devices (default 1)")
    p.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilization to assume (default 0.4)")
    p.add_argument("--peak-tflops", type=float, help="override the device's bf16 peak")
    p.add_argument("--price", type=float, help="override the price per device-hour")
    p.add_argument("--memory-gb", type=float, help="override the memory per device")
    p.add_argument("--out", help="write the planned config to this TOML file")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("eval", help="evaluate a run: bits per byte, reasoning suites, HumanEval; compare runs",
                       description="loom eval --run RUN --suite NAME[,NAME]: runs suites on the run's newest "
                                   "checkpoint and writes RUN/eval/<suite>.json and RUN/eval/results.md. "
                                   "--list shows the suites; the sub-commands compare runs, emit a suite's "
                                   "training split and run lm-evaluation-harness tasks.")
    p.add_argument("--run", help="run directory, e.g. runs/quickstart")
    p.add_argument("--suite", default="all", help="suite names or groups, comma-separated (default: all)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="eval.KEY=VALUE",
                   help="override an eval setting, e.g. --set eval.items=100 (repeatable)")
    p.add_argument("--list", action="store_true", help="list the suites")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: cpu)")
    p.set_defaults(func=cmd_eval)
    evals = p.add_subparsers(dest="eval_command", metavar="{compare,emit,harness}")
    e = evals.add_parser("compare", usage="loom eval compare RUN_A RUN_B", help="two runs' results side by side")
    e.add_argument("run_a", metavar="RUN_A", help="a run directory with eval results")
    e.add_argument("run_b", metavar="RUN_B", help="the run to compare it with")
    e.set_defaults(func=cmd_eval_compare)
    e = evals.add_parser("emit", help="a suite's training split as JSONL documents to train on")
    e.add_argument("--suite", help="generated suite names, comma-separated")
    e.add_argument("--chat", action="store_true", help="write loom's instruction-tuning mix as conversations "
                                                       "instead (what `loom sft --mix` trains on)")
    e.add_argument("--out", required=True, help="the JSONL file to write")
    e.add_argument("--items", type=_at_least(1), help="training items per suite (default 1000; 400 with --chat)")
    e.add_argument("--difficulty", type=int, help="the difficulty (default: the suite's)")
    e.add_argument("--seed", type=int, default=0, help="the seed (default 0)")
    e.set_defaults(func=cmd_eval_emit)
    e = evals.add_parser("harness", help="lm-evaluation-harness tasks on a run")
    e.add_argument("--run", required=True, help="run directory, e.g. runs/quickstart")
    e.add_argument("--tasks", required=True, help="lm-eval task names, comma-separated")
    e.add_argument("--include-path", help="a directory of extra lm-eval task YAML files")
    e.add_argument("--limit", type=_at_least(1), help="at most this many documents per task")
    e.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: cpu)")
    e.set_defaults(func=cmd_eval_harness)

    reason = sub.add_parser("reason", help="answer questions by running graphs of sub-questions against a model"
                            ).add_subparsers(dest="reason_command", required=True, metavar="COMMAND")
    for name, helptext in (("ask", "answer one question with a strategy; writes a trace and a picture"),
                           ("eval", "compare strategies on a generated suite (loom eval --list)")):
        p = reason.add_parser(name, help=helptext)
        p.add_argument("--backend", required=True,
                       help="loom:RUN_DIR | hf:MODEL_DIR | openai:BASE_URL[#model=NAME] (key from OPENAI_API_KEY)")
        p.add_argument("--program", help="a program: a JSON file, a plan in loom's Python subset (.py), "
                                         "or a built-in program's name (graph strategy)")
        p.add_argument("--samples", type=_at_least(1), default=5,
                       help="self-consistency: chains of thought to vote over")
        p.add_argument("--device", default="cpu", help="for loom: and hf: backends: cpu, cuda, cuda:N or mps")
        p.add_argument("--workdir", help="where state, trace and pictures go (default runs/reason/<time>)")
        p.add_argument("--max-calls", type=_at_least(0), default=0, help="budget: model calls (0: none)")
        p.add_argument("--max-tokens", type=_at_least(0), default=0, help="budget: tokens (0: none)")
        p.add_argument("--max-seconds", type=_at_least(0, float), default=0.0, help="budget: seconds (0: none)")
        if name == "ask":
            p.add_argument("question", help="the question, in quotes")
            p.add_argument("--strategy", default="graph", choices=["direct", "cot", "sc", "graph", "code"],
                           help="direct: one call; cot: chain of thought; sc: self-consistency; "
                                "graph: sub-questions planned by the model or --program (default); "
                                "code: the model writes a plan in loom's Python subset, decoded so that it "
                                "compiles (loom: backends)")
            p.add_argument("--rag", help="an index from `loom index build`: retrieved passages go into the prompts")
            p.add_argument("--k", type=_at_least(1), default=3, help="passages retrieved")
            p.add_argument("--parallel", type=_at_least(1), default=4, help="steps run at once")
            p.add_argument("--resume", action="store_true", help="continue the run saved in --workdir")
            p.set_defaults(func=cmd_reason_ask)
        else:
            p.add_argument("--suite", required=True, help="a generated suite (loom eval --list)")
            p.add_argument("--strategies", default="direct,cot,graph",
                           help="comma-separated: direct, cot, sc, graph, code")
            p.add_argument("--difficulty", help="comma-separated difficulties (default: the suite's)")
            p.add_argument("--items", type=_at_least(1), default=20, help="test items per difficulty (default 20)")
            p.add_argument("--seed", type=int, default=0, help="the seed the items are drawn with (default 0)")
            p.add_argument("--seeds", type=_at_least(1), default=1,
                           help="seeds from --seed on, each drawing its own items; the table pools them, with "
                                "95%% intervals (default 1)")
            p.add_argument("--out", help="write the rows as JSON here too")
            p.add_argument("--plot", help="write accuracy against difficulty, a line per strategy, to this PNG")
            p.set_defaults(func=cmd_reason_eval)

    p = reason.add_parser("data", help="training data for a planner: questions with their plans (Python subset), "
                                        "answers and worked steps, and the step questions the plans ask, as JSONL")
    p.add_argument("--out", required=True, help="the JSONL file ({\"text\": ...} per line; a jsonl data source)")
    p.add_argument("--plans", type=_at_least(1), default=400,
                   help="training questions per suite, each in every form (default 400)")
    p.add_argument("--steps", type=_at_least(1), default=400, help="step questions per sub-skill (default 400)")
    p.add_argument("--max-difficulty", type=_at_least(1), default=6,
                   help="the longest question planned in training (default 6); evaluate beyond it")
    p.add_argument("--seed", type=int, default=0, help="the seed the questions are drawn with (default 0)")
    p.add_argument("--forms", default="plan,direct,cot",
                   help="what each question is written as: plan, direct (its answer), cot (worked steps); "
                        "default all three")
    p.set_defaults(func=cmd_reason_data)

    index = sub.add_parser("index", help="BM25 retrieval indexes for reasoning (--rag, retrieve nodes)"
                           ).add_subparsers(dest="index_command", required=True, metavar="COMMAND")
    p = index.add_parser("build", help="index a folder of documents or a loom corpus")
    p.add_argument("--dir", help="a folder of .txt / .md / .rst files")
    p.add_argument("--config", help="a loom config whose corpus (loom data build's clean stage) to index")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="with --config: override a setting (repeatable)")
    p.add_argument("--out", required=True, help="the index directory")
    p.add_argument("--words", type=_at_least(1), default=150, help="words per passage (default 150)")
    p.set_defaults(func=cmd_index_build)
    p = index.add_parser("search", help="the best passages for a query")
    p.add_argument("index", help="an index directory from `loom index build`")
    p.add_argument("query", help="words to search for, in quotes")
    p.add_argument("--k", type=_at_least(1), default=5, help="passages shown (default 5)")
    p.set_defaults(func=cmd_index_search)

    p = sub.add_parser("sample", help="generate text from a trained run",
                       description="Streams a continuation of --prompt. Flags and --set sample.KEY=VALUE take "
                                   "their defaults from the [sample] settings.")
    p.add_argument("--run", required=True, help="run directory, e.g. runs/quickstart")
    # no defaults here: a flag not given takes loom.config.SampleConfig's (or --set sample.KEY's)
    p.add_argument("--prompt", help="the text to continue (default: def)")
    _sampling_args(p, "tokens to generate at most (default 200); past the model's context its window slides")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("chat", help="talk with a trained (e.g. loom sft) run in the terminal",
                       description="A conversation rendered with loom's chat template, answers streamed. "
                                   "/reset forgets the history, /system TEXT sets the system message, /quit "
                                   "leaves; Ctrl-C stops an answer. Sampling defaults from [sample].")
    p.add_argument("--run", required=True, help="run directory, e.g. runs/quickstart-sft")
    _sampling_args(p, "tokens per answer at most (default 200)")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("serve", help="an OpenAI-compatible API and a chat page over a trained run",
                       description="Serves the run's newest checkpoint: POST /v1/chat/completions and /v1/completions "
                                   "(streaming or not), GET /v1/models, /health, /openapi.json, and a chat page at /. "
                                   "Concurrent requests are decoded together. Conversations and ratings go to "
                                   "RUN/serve.sqlite unless --no-log.")
    p.add_argument("--run", required=True, help="run directory, e.g. runs/quickstart-sft")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1); any other needs --api-key")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", help="require `Authorization: Bearer KEY` on /v1 (default: the LOOM_API_KEY "
                                     "environment variable; none on loopback)")
    p.add_argument("--no-log", action="store_true", help="store no conversations or ratings")
    p.add_argument("--db", help="the SQLite file for conversations and ratings (default RUN/serve.sqlite)")
    p.add_argument("--max-batch", type=int, default=32, help="requests decoded together at most (default 32)")
    p.add_argument("--max-waiting", type=int, default=64,
                   help="requests queued beyond the batch before answering 429 (default 64)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browser pages from ORIGIN to call the API (repeatable; default none)")
    p.add_argument("--model-name", help="the model's name in the API (default: the run directory's name)")
    _sampling_args(p, "tokens per answer when a request gives no max_tokens (default 200)", seed=False)
    p.set_defaults(func=cmd_serve)

    feedback = sub.add_parser("feedback", help="turn the server's logged conversations and ratings into data")
    feedback = feedback.add_subparsers(dest="feedback_command", required=True, metavar="{export}")
    p = feedback.add_parser("export", help="an eval suite, SFT conversations and preference pairs from ratings",
                            description="Reads the log of `loom serve` and writes OUT/eval.jsonl (prompts with the "
                                        "answers rated up and down, for `loom eval --suite OUT/eval.jsonl`), "
                                        "OUT/sft.jsonl (answers rated up, for `loom sft`), OUT/preferences.jsonl "
                                        "(chosen/rejected pairs) and OUT/card.json; PII-scrubbed, deduplicated.")
    p.add_argument("--run", help="the served run: reads RUN/serve.sqlite")
    p.add_argument("--db", help="the log file, if not RUN/serve.sqlite")
    p.add_argument("--out", required=True, help="directory to write, e.g. data/feedback")
    p.set_defaults(func=cmd_feedback_export)

    export = sub.add_parser("export", help="a trained run in another format: Hugging Face transformers, GGUF")
    export = export.add_subparsers(dest="export_command", required=True, metavar="{hf,gguf}")
    p = export.add_parser("hf", help="the run's newest checkpoint as a transformers LlamaForCausalLM directory",
                          description="Writes config.json, model.safetensors, generation_config.json and the "
                                      "tokenizer (with loom's chat template) into --out, for transformers, vLLM or "
                                      "llama.cpp's converter. Dense models only. See docs/export.md.")
    _export_args(p, "a new directory to write", "float32 (default), float16 or bfloat16")
    p.set_defaults(func=cmd_export_hf)
    p = export.add_parser("gguf", help="the run's newest checkpoint as one GGUF file for llama.cpp and Ollama",
                          description="Writes llama.cpp's llama architecture: metadata, the byte-level BPE tokenizer, "
                                      "the chat template and the tensors (query and key rows in llama.cpp's rotary "
                                      "layout). Dense models only. See docs/export.md.")
    _export_args(p, "the file to write, e.g. quickstart-sft.gguf",
                 "float32 (default), float16 or bfloat16 (norms stay float32)")
    p.set_defaults(func=cmd_export_gguf)

    imports = sub.add_parser("import", help="a Hugging Face checkpoint as a loom run")
    imports = imports.add_subparsers(dest="import_command", required=True, metavar="{hf}")
    p = imports.add_parser("hf", help="a local Llama- or Mistral-shaped checkpoint as a run to train, tune, serve",
                           description="Reads DIR's config.json (refusing, by key, shapes loom cannot represent, "
                                       "before any weight is read), its *.safetensors and tokenizer.json, and writes "
                                       "a run whose step-0 checkpoint holds the weights: loom train starts from them, "
                                       "loom sft --run fine-tunes them, loom serve serves them. See docs/export.md.")
    p.add_argument("--model", required=True, help="a directory save_pretrained wrote")
    p.add_argument("--out", required=True, help="the new run directory, e.g. runs/imported")
    p.set_defaults(func=cmd_import_hf)

    p = sub.add_parser("consolidate", help="a run's newest checkpoint (sharded or not) as one model.safetensors",
                       description="Gathers the weights of a run's newest valid checkpoint, also one written in "
                                   "shards by several processes, into one safetensors file for other tools.")
    p.add_argument("--run", required=True, help="run directory, e.g. runs/quickstart")
    p.add_argument("--out", help="the file to write (default: RUN/model.safetensors)")
    p.set_defaults(func=cmd_consolidate)
    return parser


def _export_args(p, out_help: str, dtype_help: str) -> None:
    """The flags `loom export hf` and `loom export gguf` share."""
    p.add_argument("--run", required=True, help="run directory, e.g. runs/quickstart-sft")
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--dtype", default="float32", help=dtype_help)


def _sampling_args(p, max_new_tokens_help: str, seed: bool = True) -> None:
    """The sampling flags of `loom sample` and `loom chat`. No defaults here: a flag not given
    takes loom.config.SampleConfig's (or --set sample.KEY's)."""
    p.add_argument("--max-new-tokens", type=int, help=max_new_tokens_help)
    p.add_argument("--temperature", type=float, help="0 for greedy decoding (default 0.8)")
    p.add_argument("--top-k", type=int, help="0 to disable (default 50)")
    p.add_argument("--top-p", type=float, help="1.0 to disable (default 0.95)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="sample.KEY=VALUE",
                   help="a sampling setting, e.g. --set sample.temperature=0.5 (repeatable; flags win)")
    if seed:
        p.add_argument("--seed", type=int, default=0, help="seed of the sampling (default 0)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: cpu)")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except LoomError as e:
        if debug:
            traceback.print_exc()
        print(f"loom: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nloom: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`loom ... | head`): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:
        if debug:
            raise
        print(f"loom: internal error: {type(e).__name__}: {e}\n(run again with --debug for the traceback, "
              "and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
