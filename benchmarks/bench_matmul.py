"""float32 vs bfloat16 matmul rate on this CPU, for the shapes of the default's evaluation (eval.dtype).

    OMP_NUM_THREADS=T python benchmarks/bench_matmul.py

Prints GFLOP/s of `a @ b` per shape and dtype: the mean of 20 products after 3 warm-ups. On a CPU with
AMX or AVX512-BF16 bfloat16 runs several times faster; elsewhere it is emulated (eval.dtype auto then
picks float32).
"""
from __future__ import annotations

import time

import torch

SHAPES = [(2048, 2048, 2048), (108, 576, 1536), (108, 576, 49152), (2048, 576, 1536), (512, 1536, 576),
          (108, 1536, 576)]


def rate(m: int, k: int, n: int, dtype: torch.dtype, reps: int = 20) -> float:
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * m * k * n * reps / (time.perf_counter() - start) / 1e9


def main() -> None:
    print(f"threads {torch.get_num_threads()}")
    for shape in SHAPES:
        print(shape, " ".join(f"{name} {rate(*shape, dtype):.0f}" for name, dtype in
                              (("fp32", torch.float32), ("bf16", torch.bfloat16))), "GFLOP/s")


if __name__ == "__main__":
    main()
