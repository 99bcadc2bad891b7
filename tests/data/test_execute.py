"""The clean stage's tasks on every executor: a build killed part way and started again, a build
on a local Ray instance, and the Slurm scripts run as Slurm would run them, all give the same
shards as one uninterrupted local build."""

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loom.config import load_config
from loom.data import build_dataset, read_manifest
from loom.data.execute import Submitted
from loom.errors import DataError

WORDS = ("the of and to with have that be river mountain library garden window teacher morning history "
         "engine harbor village letter market winter forest lantern journey silver copper meadow").split()
FILES = 12


def document(rng: random.Random) -> str:
    sentences = []
    for _ in range(rng.randint(6, 12)):
        words = [rng.choice(WORDS) for _ in range(rng.randint(8, 14))]
        sentences.append(" ".join(words).capitalize() + ".")
    return " ".join(sentences)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("exec-corpus")
    rng = random.Random(7)
    for f in range(FILES):
        with open(root / f"part{f:02d}.jsonl", "w") as out:
            for _ in range(400):
                out.write(json.dumps({"text": document(rng)}) + "\n")
    with open(root / "part00.jsonl", "a") as out:  # duplicates across tasks
        out.write(json.dumps({"text": json.loads((root / "part05.jsonl").read_text().splitlines()[3])["text"]}) + "\n")
    return root


def overrides(corpus: Path, data_dir: Path, *extra: str) -> list[str]:
    return [f'data.sources=[{{name="dump", kind="jsonl", path="{corpus}"}}]', f'data.dir="{data_dir}"',
            "data.task_files=1", "data.workers=1", "tokenizer.vocab_size=300", "quality.text.min_words=20", *extra]


def shard_digest(data_dir: Path) -> dict:
    shards = data_dir / "shards"
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(shards.iterdir())
             if p.name != "manifest.json"}
    manifest = read_manifest(shards)
    return {"files": files, "splits": manifest["splits"]}


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> dict:
    data_dir = tmp_path_factory.mktemp("reference") / "data"
    cfg = load_config(None, overrides(corpus, data_dir))
    build_dataset(cfg)
    card = json.loads((data_dir / "data_card.json").read_text())
    assert card["duplicates_by_kind"].get("exact") == 1
    return shard_digest(data_dir)


def loom(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "loom", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_killed_build_redoes_only_unfinished_tasks_and_gives_the_same_shards(corpus, reference, tmp_path):
    data_dir = tmp_path / "data"
    sets = [arg for o in overrides(corpus, data_dir) for arg in ("--set", o)]
    markers = data_dir / "clean.work" / "tasks"
    proc = loom("data", "build", "--config", "quickstart", *sets, cwd=tmp_path)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(markers.glob("*.json"))) < 3 and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    done = len(list(markers.glob("*.json")))
    assert 3 <= done < FILES, f"the build should have been killed part way, but {done} of {FILES} tasks were done"
    assert not (data_dir / "shards").exists()

    proc = loom("data", "build", "--config", "quickstart", *sets, cwd=tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert f"{FILES - done} of {FILES} tasks to run" in err and f"{done} done before, resuming" in err
    assert shard_digest(data_dir) == reference
    assert not (data_dir / "clean.work").exists()
    assert not list((data_dir / "clean" / "tasks").glob("*.tmp-*"))


def test_process_pool_gives_the_same_shards(corpus, reference, tmp_path):
    cfg = load_config(None, overrides(corpus, tmp_path / "data", "data.workers=2"))
    build_dataset(cfg)
    assert shard_digest(tmp_path / "data") == reference


def test_a_changed_input_makes_a_new_clean_corpus(corpus, tmp_path, capfd):
    import shutil

    copy = tmp_path / "corpus"
    shutil.copytree(corpus, copy)
    cfg = load_config(None, overrides(copy, tmp_path / "data"))
    build_dataset(cfg)
    before = json.loads((tmp_path / "data" / "data_card.json").read_text())["inputs"]
    with open(copy / "part03.jsonl", "a") as out:
        out.write(json.dumps({"text": document(random.Random(99))}) + "\n")
    capfd.readouterr()
    build_dataset(cfg)
    assert "up to date" not in capfd.readouterr().err.split("tokenizer")[0]
    assert json.loads((tmp_path / "data" / "data_card.json").read_text())["inputs"] == before + 1


def test_ray_executor_on_a_local_instance_gives_the_same_shards(corpus, reference, tmp_path):
    cfg = load_config(None, overrides(corpus, tmp_path / "data", 'data.executor="ray"', "data.workers=2"))
    build_dataset(cfg)
    assert shard_digest(tmp_path / "data") == reference


def test_slurm_scripts_run_as_slurm_would_give_the_same_shards(corpus, reference, tmp_path):
    data_dir = tmp_path / "data"
    cfg = load_config(None, overrides(corpus, data_dir, 'data.executor="slurm"', "data.slurm.submit=false",
                                      'data.slurm.partition="cpu"', "data.slurm.max_parallel=4"))
    with pytest.raises(Submitted, match="clean.sbatch"):
        build_dataset(cfg)
    clean_script = (data_dir / "slurm" / "clean.sbatch").read_text()
    assert f"#SBATCH --array=0-{FILES - 1}%4" in clean_script and "#SBATCH --partition=cpu" in clean_script
    # Slurm runs the array script once per index with SLURM_ARRAY_TASK_ID set; #SBATCH lines are comments.
    for index in range(FILES):
        env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(index)}
        subprocess.run(["bash", str(data_dir / "slurm" / "clean.sbatch")], env=env, check=True, cwd=tmp_path,
                       capture_output=True)
    result = subprocess.run(["bash", str(data_dir / "slurm" / "merge.sbatch")], cwd=tmp_path, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "cleaning:" not in result.stderr  # every task was done by the array
    assert shard_digest(data_dir) == reference


def test_slurm_without_sbatch_says_how_to_submit(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    cfg = load_config(None, overrides(corpus, tmp_path / "data", 'data.executor="slurm"'))
    with pytest.raises(DataError, match="sbatch is not on PATH.*submit = false"):
        build_dataset(cfg)


def test_run_task_needs_a_plan(tmp_path):
    from loom.data.clean import run_clean_task

    cfg = load_config(None, [f'data.dir="{tmp_path}/data"'])
    with pytest.raises(DataError, match="no plan"):
        run_clean_task(cfg, 0)
