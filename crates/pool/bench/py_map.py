"""Baseline for `cargo run --release -p forkyard-pool --example compare`:
`map` of N tiny items through multiprocessing.Pool(2), chunksize 1000, both
`Pool.map` and `Pool.imap_unordered`. Prints `map_items_per_sec N` and
`imap_unordered_items_per_sec N`."""
import multiprocessing
import sys
import time


def double(n):
    return n * 2


if __name__ == "__main__":
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 200000
    with multiprocessing.Pool(2) as pool:
        pool.map(double, range(1000), chunksize=100)  # workers up and warm
        start = time.perf_counter()
        out = pool.map(double, range(total), chunksize=1000)
        secs = time.perf_counter() - start
        assert len(out) == total
        print(f"map_items_per_sec {round(total / secs)}")
        start = time.perf_counter()
        n = sum(1 for _ in pool.imap_unordered(double, range(total), chunksize=1000))
        secs = time.perf_counter() - start
        assert n == total
        print(f"imap_unordered_items_per_sec {round(total / secs)}")
