"""MemoryWrapLayer forward+backward at B=500, M=100, D=1280, per distance: ours vs the published package.

Run: python -m bench.bench_memory_layer [--repeats 30]
Prints a markdown table: median time per call, and each time as a ratio to OUR cosine (same run).
Needs `memorywrap==1.1.7` (in requirements-test.txt) for the published columns.
"""
import argparse
import statistics
import time

import torch

from architectures.memory import MemoryWrapLayer


def time_layer(layer, x, memory, repeats):
    times = []
    for i in range(repeats + 3):
        x.grad = memory.grad = None
        layer.zero_grad(set_to_none=True)
        start = time.perf_counter()
        layer(x, memory).sum().backward()
        if i >= 3:  # warm-up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--memory", type=int, default=100)
    parser.add_argument("--dim", type=int, default=1280)
    args = parser.parse_args()
    try:
        import memorywrap
    except ImportError:
        memorywrap = None
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.dim, requires_grad=True)
    memory = torch.randn(args.memory, args.dim, requires_grad=True)
    results = {}
    for distance in ("cosine", "l2", "dot"):
        results[("ours", distance)] = time_layer(MemoryWrapLayer(args.dim, 10, distance=distance), x, memory, args.repeats)
        if memorywrap is not None:
            published = memorywrap.MemoryWrapLayer(args.dim, 10, distance=distance)
            results[("memorywrap 1.1.7", distance)] = time_layer(published, x, memory, args.repeats)
    base = results[("ours", "cosine")]
    print(f"B={args.batch} M={args.memory} D={args.dim}, forward+backward, median of {args.repeats}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| implementation | distance | ms / call | ratio to our cosine |")
    print("|---|---|---|---|")
    for (impl, distance), seconds in results.items():
        print(f"| {impl} | {distance} | {seconds * 1e3:.1f} | {seconds / base:.2f} |")


if __name__ == "__main__":
    main()
