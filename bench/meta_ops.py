#!/usr/bin/env python3
"""Metadata operations per second on a mounted filesystem.

Runs create, stat, rename, unlink and mkdir/rmdir with N threads in a fresh
directory under the mount and prints ops/s per operation. It measures
whatever is mounted there (Strata, JuiceFS, a local directory), so the same
numbers compare filesystems side by side.

usage: meta_ops.py MOUNT [--threads N] [--files N] [--label L]
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
    a = ap.parse_args()
    base = os.path.join(a.mount, "bench-" + uuid.uuid4().hex[:8])
    os.mkdir(base)
    names = [os.path.join(base, f"f{i}") for i in range(a.files)]
    res = {}
    res["create"] = run(a.threads, lambda p: os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)), names)
    res["stat"] = run(a.threads, os.stat, names)
    res["rename"] = run(a.threads, lambda p: os.rename(p, p + "r"), names)
    res["unlink"] = run(a.threads, lambda p: os.unlink(p + "r"), names)
    dirs = [os.path.join(base, f"d{i}") for i in range(a.files // 2)]
    res["mkdir"] = run(a.threads, os.mkdir, dirs)
    res["rmdir"] = run(a.threads, os.rmdir, dirs)
    os.rmdir(base)
    print(f"{a.label:<24} threads={a.threads} " + " ".join(f"{k}={v:.0f}/s" for k, v in res.items()), flush=True)


if __name__ == "__main__":
    main()
