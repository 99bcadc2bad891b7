"""The `loom` command end to end, as a user runs it: real subprocesses, real files."""

import pytest

from conftest import run_loom, tiny_overrides


def loom(*args, cwd, check=True):
    return run_loom(*args, cwd=cwd, ok=True if check else None)


def sets(overrides):
    return [arg for o in overrides for arg in ("--set", o)]


@pytest.mark.parametrize("command", [["quickstart"], ["data", "build"], ["tokenizer", "train"], ["train"],
                                     ["sample"], ["eval"], ["reason", "ask"], ["reason", "eval"], ["index", "build"]])
def test_every_subcommand_has_help(command, tmp_path):
    out = loom(*command, "--help", cwd=tmp_path)
    assert "usage: loom" in out.stdout


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

    # Running the same training again continues the finished run instead of starting over.
    resumed = loom("train", *sets(overrides), cwd=tmp_path)
    assert "resumed" in resumed.stderr


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
