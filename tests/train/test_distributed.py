"""A 2-process gloo run (FSDP2 and replicated) makes the same meta-update as one process."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("dist_worker.py")


def run(tmp_path: Path, nproc: int, mode: str) -> dict:
    out = tmp_path / f"{mode}_{nproc}.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, str(WORKER), str(out), mode]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_port", str(29500 + os.getpid() % 1000), str(WORKER), str(out), mode]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return load_file(str(out))


@pytest.mark.parametrize("mode", ["fsdp", "replicated"])
def test_two_gloo_processes_match_one(tmp_path, mode):
    single = run(tmp_path, 1, "replicated")
    double = run(tmp_path, 2, mode)
    assert single.keys() == double.keys() and single
    for name in single:
        torch.testing.assert_close(double[name], single[name], atol=1e-5, rtol=1e-4, msg=name)
