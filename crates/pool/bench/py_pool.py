"""Baseline for `cargo run --release -p forkyard-pool --example compare`:
tiny tasks through multiprocessing.Pool(2).apply_async. Prints `tasks_per_sec N`."""
import multiprocessing
import sys
import time


def task(n):
    return n + 1


if __name__ == "__main__":
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    with multiprocessing.Pool(2) as pool:
        pool.apply(task, (0,))  # workers up before the clock starts
        start = time.perf_counter()
        results = [pool.apply_async(task, (i,)) for i in range(total)]
        for r in results:
            r.get()
        secs = time.perf_counter() - start
    print(f"tasks_per_sec {round(total / secs)}")
