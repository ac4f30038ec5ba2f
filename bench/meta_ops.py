#!/usr/bin/env python3
"""Metadata operations per second on a mounted filesystem.

Runs create, stat, rename, unlink and mkdir/rmdir with N worker processes
in a fresh directory under the mount and prints ops/s per operation, and
with --latency each operation's p50 and p99 in milliseconds. It measures
whatever is mounted there (Strata, JuiceFS, a local directory), so the same
numbers compare filesystems side by side.

Workers are processes (forked), so Python's lock between threads does not
bound them; all of them start each operation together, and its rate is the
operations of all of them over the time from that start to the last one's
end.

With --spread each worker works in its own directory; otherwise all share
one, where the kernel serializes creates, renames and unlinks (it locks the
directory for each), whatever the filesystem.

usage: meta_ops.py MOUNT [--threads N] [--files N] [--label L] [--spread] [--latency]
"""
import argparse
import multiprocessing as mp
import os
import time
import uuid


def worker(fn, items, barrier, out):
    barrier.wait()
    lat = []
    for x in items:
        t = time.perf_counter()
        fn(x)
        lat.append(time.perf_counter() - t)
    out.put((time.perf_counter(), lat))


def run(n, fn, items):
    """Ops/s of `fn` over `items` split among `n` processes, and every latency."""
    barrier = mp.Barrier(n + 1)
    out = mp.Queue()
    procs = [mp.Process(target=worker, args=(fn, items[i::n], barrier, out)) for i in range(n)]
    for p in procs:
        p.start()
    barrier.wait()
    start = time.perf_counter()
    ends, lat = [], []
    for _ in procs:
        end, l = out.get()
        ends.append(end)
        lat.extend(l)
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"a worker failed (exit {p.exitcode})")
    return len(items) / (max(ends) - start), lat


def pct(lat, q):
    s = sorted(lat)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def create(p):
    os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644))


def rename(p):
    os.rename(p, p + "r")


def unlink(p):
    os.unlink(p + "r")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mount")
    ap.add_argument("--threads", type=int, default=1, help="worker processes")
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--label", default="")
    ap.add_argument("--spread", action="store_true")
    ap.add_argument("--latency", action="store_true", help="also print p50 and p99 per operation")
    a = ap.parse_args()
    mp.set_start_method("fork")
    base = os.path.join(a.mount, "bench-" + uuid.uuid4().hex[:8])
    os.mkdir(base)
    # `run` gives item i to worker i % threads: with --spread, its directory.
    subdirs = [os.path.join(base, f"t{t}") if a.spread else base for t in range(a.threads)]
    if a.spread:
        for d in subdirs:
            os.mkdir(d)
    names = [os.path.join(subdirs[i % a.threads], f"f{i}") for i in range(a.files)]
    dirs = [os.path.join(subdirs[i % a.threads], f"d{i}") for i in range(a.files // 2)]
    res = {}
    for op, fn, items in [
        ("create", create, names),
        ("stat", os.stat, names),
        ("rename", rename, names),
        ("unlink", unlink, names),
        ("mkdir", os.mkdir, dirs),
        ("rmdir", os.rmdir, dirs),
    ]:
        res[op] = run(a.threads, fn, items)
    if a.spread:
        for d in subdirs:
            os.rmdir(d)
    os.rmdir(base)
    mode = " spread" if a.spread else ""
    print(f"{a.label:<24} threads={a.threads}{mode} " + " ".join(f"{k}={v:.0f}/s" for k, (v, _) in res.items()), flush=True)
    if a.latency:
        print(
            f"{a.label:<24} threads={a.threads}{mode} latency ms p50/p99 "
            + " ".join(f"{k}={pct(l, 0.5):.2f}/{pct(l, 0.99):.2f}" for k, (_, l) in res.items()),
            flush=True,
        )


if __name__ == "__main__":
    main()
