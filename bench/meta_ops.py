#!/usr/bin/env python3
"""Metadata operations per second on a mounted filesystem.

Runs create, stat, rename, unlink and mkdir/rmdir with N threads in a fresh
directory under the mount and prints ops/s per operation. It measures
whatever is mounted there (Strata, JuiceFS, a local directory), so the same
numbers compare filesystems side by side.

With --spread each thread works in its own directory; otherwise all share
one, where the kernel serializes creates, renames and unlinks (it locks the
directory for each), whatever the filesystem.

usage: meta_ops.py MOUNT [--threads N] [--files N] [--label L] [--spread]
"""
import argparse
import os
import threading
import time
import uuid


def run(n_threads, fn, items):
    chunks = [items[i::n_threads] for i in range(n_threads)]
    threads = [threading.Thread(target=lambda c=c: [fn(x) for x in c]) for c in chunks]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(items) / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mount")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--label", default="")
    ap.add_argument("--spread", action="store_true")
    a = ap.parse_args()
    base = os.path.join(a.mount, "bench-" + uuid.uuid4().hex[:8])
    os.mkdir(base)
    # `run` gives item i to thread i % threads: with --spread, its directory.
    subdirs = [os.path.join(base, f"t{t}") if a.spread else base for t in range(a.threads)]
    if a.spread:
        for d in subdirs:
            os.mkdir(d)
    names = [os.path.join(subdirs[i % a.threads], f"f{i}") for i in range(a.files)]
    res = {}
    res["create"] = run(a.threads, lambda p: os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)), names)
    res["stat"] = run(a.threads, os.stat, names)
    res["rename"] = run(a.threads, lambda p: os.rename(p, p + "r"), names)
    res["unlink"] = run(a.threads, lambda p: os.unlink(p + "r"), names)
    dirs = [os.path.join(subdirs[i % a.threads], f"d{i}") for i in range(a.files // 2)]
    res["mkdir"] = run(a.threads, os.mkdir, dirs)
    res["rmdir"] = run(a.threads, os.rmdir, dirs)
    if a.spread:
        for d in subdirs:
            os.rmdir(d)
    os.rmdir(base)
    mode = " spread" if a.spread else ""
    print(f"{a.label:<24} threads={a.threads}{mode} " + " ".join(f"{k}={v:.0f}/s" for k, v in res.items()), flush=True)


if __name__ == "__main__":
    main()
