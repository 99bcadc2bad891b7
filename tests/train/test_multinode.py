"""Two nodes on one machine: two torchrun agents meet over loopback through the c10d rendezvous,
as two hosts of a cluster would, and train one sharded run together."""

import os
import socket
import subprocess
import sys

from test_ddp import losses, run_loom, sets
from test_fsdp import COMMON, relative_gap

from conftest import tiny_overrides


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_torchrun_agents_as_two_nodes_train_like_one_process(tiny_root):
    single = tiny_overrides(tiny_root, "nodes-single", COMMON)
    run_loom([sys.executable, "-m", "loom", "train", *sets(single)], tiny_root)

    port = free_port()
    sharded = tiny_overrides(tiny_root, "nodes-2", [*COMMON, "parallel.dp_shard=2"])
    agent = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
             "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "loom-nodes",
             "-m", "loom", "train", *sets(sharded)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen(agent, cwd=tiny_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    try:
        results = [node.communicate(timeout=400) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    for node, (_, err) in zip(nodes, results, strict=True):
        assert node.returncode == 0, err[-3000:]
    a, b = losses(tiny_root / "runs" / "nodes-single"), losses(tiny_root / "runs" / "nodes-2")
    assert len(a) == len(b) == 20 and relative_gap(a, b) <= 1e-4
    assert "2 data-parallel rank(s)" in "".join(err for _, err in results)
