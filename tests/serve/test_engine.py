"""The continuous-batching engine: requests decoded together give each the tokens it would get
alone, join and leave between steps, stop on cancel, and a full queue is refused."""

import threading

import pytest
import torch

from loom.model import GPT, ModelConfig, generate
from loom.serve.engine import Engine, QueueFull, Request


def small_model(seed=0, max_seq_len=96):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=97, d_model=32, n_layer=2, n_head=4, n_kv_head=2, max_seq_len=max_seq_len)
    return GPT(cfg).eval()


@pytest.fixture
def engine():
    made = []

    def make(model, **kwargs):
        made.append(Engine(model, **kwargs))
        return made[-1]

    yield make
    for e in made:
        e.close()


def run_together(engine, prompts, max_tokens, **settings):
    """Every prompt streamed by its own thread, all at once; the tokens of each."""
    out = [None] * len(prompts)
    start = threading.Barrier(len(prompts))

    def one(i):
        start.wait()
        out[i] = list(engine.stream(prompts[i], max_tokens, **settings))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_requests_decoded_together_get_the_greedy_tokens_each_would_get_alone(engine):
    model = small_model()
    prompts = [[1, 2, 3], [5] * 10, list(range(20, 45)), [7, 8], [9], list(range(60, 70))]
    alone = [list(generate(model, p, 40, temperature=0)) for p in prompts]
    e = engine(model, max_batch=4)  # six requests, four rows: two wait and join as rows free up
    together = run_together(e, prompts, 40, temperature=0)
    assert together == alone
    load = e.load()
    assert load["peak_batch"] > 1  # they did share steps
    assert load["steps"] < sum(len(t) for t in together)
    assert load["running"] == 0 and load["waiting"] == 0


def test_a_request_joining_midway_and_one_leaving_early_change_nothing_for_the_others(engine):
    model = small_model(seed=1)
    e = engine(model, max_batch=8)
    long_prompt, late_prompt, short_prompt = [3, 1, 4, 1, 5], [2, 7, 1, 8], [6, 6]
    first = e.stream(long_prompt, 60, temperature=0)
    got = [next(first) for _ in range(10)]
    short = list(e.stream(short_prompt, 3, temperature=0))  # joins, finishes, leaves while `first` runs
    late = e.stream(late_prompt, 50, temperature=0)
    got += list(first)
    assert got == list(generate(model, long_prompt, 60, temperature=0))
    assert short == list(generate(model, short_prompt, 3, temperature=0))
    assert list(late) == list(generate(model, late_prompt, 50, temperature=0))


def test_a_seeded_request_samples_the_same_tokens_whatever_runs_beside_it(engine):
    model = small_model(seed=2)
    e = engine(model, max_batch=8)
    settings = dict(temperature=1.0, top_k=20, top_p=0.9, seed=1234)
    alone = list(e.stream([4, 5, 6], 30, **settings))
    crowded = run_together(e, [[4, 5, 6], [1], [2, 2], [3, 3, 3]], 30, temperature=1.0, seed=None)
    again = run_together(e, [[4, 5, 6], [9, 9]], 30, **settings)
    assert again[0] == alone and len(crowded) == 4
    assert list(e.stream([4, 5, 6], 30, **{**settings, "seed": 99})) != alone


def test_stop_ids_end_a_request_and_the_context_bounds_it(engine):
    model = small_model(seed=3, max_seq_len=24)
    e = engine(model)
    free = list(generate(model, [1, 2], 10, temperature=0))
    finishes = []

    def collect(token, finish):
        if token is None:
            finishes.append(finish)

    e.submit(Request([1, 2], 10, collect, temperature=0, stop_ids=frozenset({free[4]})))
    stopped = list(e.stream([1, 2], 10, temperature=0, stop_ids=frozenset({free[4]})))
    assert stopped == free[:free.index(free[4])]  # the stop id itself is not delivered
    full = list(e.stream([1] * 20, 100, temperature=0))
    assert len(full) == 24 - 20 + 1  # positions 20..23 fed back, the last sampled from position 23
    assert finishes == ["stop"]


def test_cancel_frees_the_row_and_a_full_queue_is_refused(engine):
    model = small_model(seed=4)
    e = engine(model, max_batch=1, max_waiting=1)
    hold, release = threading.Event(), threading.Event()
    seen = []

    def blocking(token, finish):  # holds the engine inside a step: the row stays taken
        seen.append((token, finish))
        hold.set()
        release.wait(30)

    first = e.submit(Request([1, 2, 3], 50, blocking, temperature=0))
    assert hold.wait(30)
    e.submit(Request([4], 5, lambda t, f: None, temperature=0))  # takes the one place in the queue
    with pytest.raises(QueueFull):
        e.submit(Request([5], 5, lambda t, f: None, temperature=0))
    first.cancel()
    release.set()
    e.close()
    assert seen[-1] == (None, "cancelled") and len(seen) < 50


def test_prompts_that_do_not_fit_are_refused_before_they_queue(engine):
    e = engine(small_model(max_seq_len=16))
    with pytest.raises(ValueError, match="no room"):
        e.submit(Request(list(range(16)), 4, lambda t, f: None))
    with pytest.raises(ValueError, match="at least one token"):
        e.submit(Request([], 4, lambda t, f: None))
