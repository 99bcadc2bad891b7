"""The `loom` command end to end, as a user runs it: real subprocesses, real files."""

import pytest

from conftest import run_loom, tiny_overrides


def loom(*args, cwd, check=True):
    return run_loom(*args, cwd=cwd, ok=True if check else None)


def sets(overrides):
    return [arg for o in overrides for arg in ("--set", o)]


def leaf_commands(parser=None, path=()):
    """(words of the command, its parser) for every runnable `loom` command."""
    import argparse

    from loom.cli import build_parser

    parser = parser or build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [(path, parser)]
    return [leaf for name, sub in subs[0].choices.items() for leaf in leaf_commands(sub, (*path, name))]


@pytest.mark.parametrize("command, parser", leaf_commands(), ids=lambda x: " ".join(x) if isinstance(x, tuple) else "")
def test_every_subcommand_has_help(command, parser, tmp_path):
    """`--help` of each command prints its own usage line, and names every option it takes
    with a help text, or a description of the command, or both."""
    out = loom(*command, "--help", cwd=tmp_path).stdout
    assert out.startswith(f"usage: loom {' '.join(command)} ")
    options = [o for a in parser._actions for o in a.option_strings]
    assert "--help" in options
    for option in options:
        assert f" {option}" in out, f"loom {' '.join(command)} --help does not mention {option}"
    unexplained = [a.option_strings or a.dest for a in parser._actions if not a.help]
    assert not unexplained, f"loom {' '.join(command)}: no help text for {unexplained}"
    assert (parser.description or "").split()[:3] == out.split("\n\n")[1].split()[:3] or not parser.description


def test_quickstart_end_to_end_at_tiny_size(tmp_path):
    overrides = tiny_overrides(tmp_path, "qs", ["sample.max_new_tokens=30", "sample.prompt=\"def \""])
    out = loom("quickstart", *sets(overrides), cwd=tmp_path)
    assert "--- sample from" in out.stdout and "validation loss" in out.stdout
    run = tmp_path / "runs" / "qs"
    for name in ("config.toml", "tokenizer.json", "metrics.jsonl", "events.jsonl", "report.md"):
        assert (run / name).is_file()
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_000006"
    assert (tmp_path / "data" / "shards" / "manifest.json").is_file()

    sample = loom("sample", "--run", str(run), "--prompt", "import ", "--max-new-tokens", "20",
                  "--temperature", "0", cwd=tmp_path)
    assert sample.stdout.startswith("import ")
    again = loom("sample", "--run", str(run), "--prompt", "import ", "--max-new-tokens", "20",
                 "--temperature", "0", cwd=tmp_path)
    assert again.stdout == sample.stdout  # greedy is deterministic

    # Running the same training again finds the finished run instead of starting over.
    again = loom("train", *sets(overrides), cwd=tmp_path)
    assert again.stdout.startswith("run already complete at step 6 (trained earlier)")


def test_data_and_tokenizer_commands(tmp_path):
    overrides = tiny_overrides(tmp_path, extra=['data.sources=[{name="stdlib", kind="stdlib", max_files=15}]',
                                                      "data.val_fraction=0.3"])
    tok = loom("tokenizer", "train", *sets(overrides), cwd=tmp_path)
    assert tok.stdout.strip().endswith("tokenizer.json")
    built = loom("data", "build", *sets(overrides), cwd=tmp_path)
    assert built.stdout.strip().endswith("shards")
    again = loom("data", "build", *sets(overrides), cwd=tmp_path)
    assert "up to date" in again.stderr


def test_user_errors_are_one_line_without_traceback(tmp_path):
    missing_run = loom("sample", "--run", str(tmp_path / "nope"), cwd=tmp_path, check=False)
    assert missing_run.returncode == 1 and "not a loom run" in missing_run.stderr
    no_data = loom("train", *sets(tiny_overrides(tmp_path)), cwd=tmp_path, check=False)
    assert no_data.returncode == 1 and "loom data build" in no_data.stderr
    for result in (missing_run, no_data):
        assert "Traceback" not in result.stderr


def test_sample_checks_before_it_prints(tmp_path):
    out = loom("sample", "--run", str(tmp_path / "nope"), "--prompt", "x", cwd=tmp_path, check=False)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("loom: error: ") and "not a loom run" in out.stderr


@pytest.mark.parametrize("flag, value, message", [
    ("--temperature", "-1", "--temperature must be 0 (greedy) or more, not -1.0"),
    ("--temperature", "nan", "--temperature must be 0 (greedy) or more, not nan"),
    ("--top-p", "5", "--top-p must be in (0, 1] (1: off), not 5.0"),
    ("--top-p", "0", "--top-p must be in (0, 1] (1: off), not 0.0"),
    ("--top-k", "-3", "--top-k must be 0 (off) or more, not -3"),
    ("--max-new-tokens", "0", "--max-new-tokens must be between 1 and 1,000,000, not 0"),
    ("--max-new-tokens", "10000000", "--max-new-tokens must be between 1 and 1,000,000, not 10000000"),
    ("--device", "cuda:7", "device 'cuda:7': this machine has"),
    ("--device", "toaster", "device 'toaster' is not a device name"),
])
def test_sample_arguments_are_checked_in_one_line(tiny_run, tmp_path, flag, value, message):
    if flag == "--device" and value.startswith("cuda"):
        import torch

        if torch.cuda.device_count() > 7:
            pytest.skip("this machine has a cuda:7")
    out = loom("sample", "--run", str(tiny_run[0]), "--prompt", "x", flag, value, cwd=tmp_path, check=False)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and message in out.stderr and "Traceback" not in out.stderr


def test_sample_past_the_context_slides_its_window_and_says_so(tiny_run, tmp_path):
    run_dir, cfg = tiny_run
    context = cfg.model.max_seq_len
    out = loom("sample", "--run", str(run_dir), "--prompt", "def", "--max-new-tokens", str(3 * context),
               "--temperature", "1", "--top-k", "0", "--top-p", "1", cwd=tmp_path)
    assert out.stderr.count(f"exceed the model's context of {context} tokens") == 1
    assert out.stdout.startswith("def") and len(out.stdout) > len("def\n")


def test_the_readme_first_screen_gives_the_two_commands_and_how_to_reach_loom():
    """A new user reads the first screen, runs `make quickstart`, then types the README's `loom`
    commands: the screen must say where make put them (the Makefile's virtual environment)."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    first_screen = "\n".join((root / "README.md").read_text().splitlines()[:24])
    makefile = (root / "Makefile").read_text()
    venv = next(line.split("?=")[1].strip() for line in makefile.splitlines() if line.startswith("VENV"))
    assert "make quickstart" in first_screen and "make test" in first_screen
    assert f". {venv}/bin/activate" in first_screen and f"{venv}/bin/loom" in first_screen
    assert "$(BIN)/loom quickstart" in makefile and "BIN    := $(VENV)/bin" in makefile


@pytest.mark.parametrize("args, message", [
    (["index", "search", "idx", "q", "--k", "0"], "argument --k: must be 1 or more, not 0"),
    (["reason", "ask", "--backend", "loom:r", "--parallel", "0", "q"], "argument --parallel: must be 1 or more"),
    (["reason", "ask", "--backend", "loom:r", "--max-seconds", "nan", "q"],
     "argument --max-seconds: must be 0 or more"),
    (["eval", "emit", "--items", "-5"], "argument --items: must be 1 or more, not -5"),
    (["plan", "--tokens", "1e9", "--devices", "0"], "argument --devices: must be 1 or more, not 0"),
])
def test_numeric_arguments_are_checked_before_anything_runs(args, message, tmp_path):
    out = loom(*args, cwd=tmp_path, check=False)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_sample_help_states_the_defaults_sampling_takes():
    # the flags have no defaults of their own: a flag not given takes SampleConfig's
    from dataclasses import fields

    from loom.cli import build_parser
    from loom.config import SampleConfig

    sample = build_parser()._subparsers._group_actions[0].choices["sample"]
    helps = {a.dest: a.help for a in sample._actions}
    for f in fields(SampleConfig):
        assert sample.get_default(f.name) is None
        assert f"(default: {getattr(SampleConfig(), f.name)})" in helps[f.name].replace("default ", "default: ")
