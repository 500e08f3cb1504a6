"""Benchmark: the same `suite run` twice with the same seed, side by side.

The first run trains the model (cache miss); the second must load it from the
cache and give the same clean accuracy.  Prints both wall times and their ratio.

    python bench/cache_reuse.py [--model vgg16] [--profile default]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def run_once(args: argparse.Namespace, cache: str, out: str) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "suite", "run", "--model", args.model, "--compress", "none",
           "--profile", args.profile, "--seed", str(args.seed), "--cache-dir", cache, "--output-dir", out,
           "--quiet", "--json"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache, out = os.path.join(tmp, "cache"), os.path.join(tmp, "runs")
        t1, r1 = run_once(args, cache, out)
        t2, r2 = run_once(args, cache, out)
    print(f"model={args.model} profile={args.profile} seed={args.seed}")
    print(f"first run (train + evaluate):  {t1:8.2f} s  clean_acc={r1['clean_acc']:.4f}")
    print(f"second run (cache hit):        {t2:8.2f} s  clean_acc={r2['clean_acc']:.4f}")
    print(f"speedup of the cached run:     {t1 / t2:8.1f}x")
    print(f"same clean_acc: {r1['clean_acc'] == r2['clean_acc']}")


if __name__ == "__main__":
    main()
