"""`loom serve` under concurrent streaming clients: continuous batching against one-at-a-time.

Two real `loom serve` processes on loopback serve the same run, one after the other, at their
default settings but for the batch: loom's (`--max-batch 32`, continuous batching) and the
reference (`--max-batch 1`: the same server decoding one request at a time, as a loop over
`generate` would). For each number of clients (1, 4, 16, 32) every client is a thread that sends
`--requests` streaming chat completions in turn (`max_tokens` `--max-tokens`, a seed each, the
server's default sampling) and reads the server-sent events with `http.client`, so the clients
cost little of the machine's two cores. Per level: aggregate completion tokens/s (the servers'
own `usage` counts over the level's wall time), time to first token and per-token latency (a
stream's first-to-last content time over its tokens after the first) p50/p95 over the streams,
errors, and streams that ended in
`data: [DONE]`. Each level is bounded by `--level-timeout` seconds.

    python bench/serve_throughput.py [--run runs/quickstart] [--clients 1,4,16,32] [--max-tokens 64]
                                     [--requests 2] [--level-timeout 300]

Read the ratios: the machine is shared and absolute figures move with its load. The claim
checked: at 32 clients loom's aggregate tokens/s is at least 4x its one-client figure, with no
errors and every stream ended in [DONE].
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, max_batch: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "loom", "serve", "--run", str(run), "--port", str(port),
                                "--no-log", "--max-batch", str(max_batch), "--max-waiting", "1024"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"loom serve exited: {process.stdout.read()}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return process, port
        except OSError:
            time.sleep(0.3)
    process.kill()
    sys.exit("loom serve did not start within 300 s")


def model_name(port: int) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/v1/models")
    return json.loads(connection.getresponse().read())["data"][0]["id"]


def one_stream(port: int, model: str, max_tokens: int, seed: int, deadline: float) -> dict:
    """One streaming request; what it measured."""
    body = {"model": model, "stream": True, "max_tokens": max_tokens, "seed": seed,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": f"Write a Python function number {seed}."}]}
    sent = time.perf_counter()
    result = {"tokens": 0, "ttft": None, "first": None, "last": None, "done": False, "error": None}
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=max(1.0, deadline - time.monotonic()))
        connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            result["error"] = f"HTTP {response.status}: {response.read()[:200]!r}"
            return result
        for raw in response:
            line = raw.decode("utf-8").rstrip("\r\n")
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                result["done"] = True
                break
            event = json.loads(data)
            if "error" in event:
                result["error"] = event["error"]["message"]
                continue
            if event.get("usage"):
                result["tokens"] = event["usage"]["completion_tokens"]
            for choice in event.get("choices", []):
                if choice.get("delta", {}).get("content"):
                    now = time.perf_counter()
                    if result["first"] is None:
                        result["ttft"], result["first"] = now - sent, now
                    result["last"] = now
        connection.close()
    except OSError as e:
        result["error"] = f"{type(e).__name__}: {e}"
    return result


def level(port: int, model: str, clients: int, requests: int, max_tokens: int, timeout: float) -> dict:
    results: list[dict] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    deadline = time.monotonic() + timeout

    def client(index: int) -> None:
        start.wait()
        for r in range(requests):
            if time.monotonic() >= deadline:
                return
            measured = one_stream(port, model, max_tokens, seed=index * 1000 + r, deadline=deadline)
            with lock:
                results.append(measured)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 5)
    wall = time.perf_counter() - began
    ttfts = [r["ttft"] for r in results if r["ttft"] is not None]
    # per-token latency of a stream: the time from its first to its last content event over the
    # tokens after the first (an event can carry several tokens when the server is busy)
    gaps = [(r["last"] - r["first"]) / (r["tokens"] - 1) for r in results if r["first"] is not None and r["tokens"] > 1]
    return {"clients": clients, "streams": len(results), "expected": clients * requests,
            "tokens": sum(r["tokens"] for r in results), "wall": wall,
            "tok_s": sum(r["tokens"] for r in results) / wall,
            "ttft": percentiles(ttfts), "gap": percentiles(gaps),
            "errors": sum(r["error"] is not None for r in results) + clients * requests - len(results),
            "done": sum(r["done"] for r in results),
            "first_error": next((r["error"] for r in results if r["error"]), None)}


def percentiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return (float("nan"), float("nan"))
    if len(values) == 1:
        return (values[0], values[0])
    cuts = statistics.quantiles(values, n=20, method="inclusive")
    return (statistics.median(values), cuts[18])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/quickstart", help="a trained run (default runs/quickstart)")
    parser.add_argument("--clients", default="1,4,16,32")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=2, help="streams each client sends in turn (default 2)")
    parser.add_argument("--level-timeout", type=float, default=300)
    args = parser.parse_args()
    run = Path(args.run)
    if not (run / "config.toml").is_file():
        sys.exit(f"{run} is not a trained run: make one with `loom quickstart` (or give --run)")
    counts = [int(c) for c in args.clients.split(",")]

    table = {}
    for name, max_batch in (("loom", 32), ("reference", 1)):
        process, port = start_server(run, max_batch)
        try:
            model = model_name(port)
            one_stream(port, model, 8, seed=0, deadline=time.monotonic() + 120)  # warm-up
            for n in counts:
                table[name, n] = level(port, model, n, args.requests, args.max_tokens, args.level_timeout)
                r = table[name, n]
                print(f"[bench] {name:9s} {n:3d} clients: {r['tok_s']:8.1f} tok/s, {r['streams']} streams, "
                      f"{r['errors']} errors", file=sys.stderr, flush=True)
        finally:
            process.terminate()
            process.wait(30)

    print(f"\nloom serve on {run} ({os.cpu_count()} CPUs): {args.requests} streams per client, "
          f"max_tokens {args.max_tokens}; loom = continuous batching (--max-batch 32), "
          "reference = the same server one request at a time (--max-batch 1)\n")
    head = ("| clients | loom tok/s | reference tok/s | loom / reference | loom vs 1 client | TTFT p50 / p95 (s) "
            "| per-token p50 / p95 over streams (ms) | reference TTFT p50 / p95 (s) | errors | [DONE] |")
    print(head)
    print("|" + "|".join("---" for _ in range(head.count("|") - 1)) + "|")
    one = table["loom", counts[0]]["tok_s"]
    for n in counts:
        a, b = table["loom", n], table["reference", n]
        print(f"| {n} | {a['tok_s']:.1f} | {b['tok_s']:.1f} | {a['tok_s'] / b['tok_s']:.2f}x | "
              f"{a['tok_s'] / one:.2f}x | {a['ttft'][0]:.3f} / {a['ttft'][1]:.3f} | "
              f"{a['gap'][0] * 1e3:.1f} / {a['gap'][1] * 1e3:.1f} | {b['ttft'][0]:.2f} / {b['ttft'][1]:.2f} | "
              f"{a['errors']} / {b['errors']} | {a['done']}/{a['expected']} |")
    errors = [table[k]["first_error"] for k in table if table[k]["first_error"]]
    if errors:
        print(f"\nfirst error: {errors[0]}")
    top = max(counts)
    best = table["loom", top]
    ok = (best["tok_s"] >= 4 * one and all(table["loom", n]["errors"] == 0 for n in counts)
          and all(table["loom", n]["done"] == table["loom", n]["expected"] for n in counts))
    print(f"\nat {top} clients loom's aggregate is {best['tok_s'] / one:.2f}x its one-client figure "
          f"(target >= 4x, 0 errors, every stream ends in [DONE]): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
