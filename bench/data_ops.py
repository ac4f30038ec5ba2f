#!/usr/bin/env python3
"""Helpers for bench/data_bench.sh: small-file workloads, parsing the output of
`juicefs bench` and fio, and the final side-by-side table.

  data_ops.py small-write DIR FILES SIZE         writes FILES files of SIZE bytes; prints files/s
  data_ops.py small-read DIR READERS             reads every file in DIR with READERS threads; prints files/s
  data_ops.py jfs-bench OUTPUT                   prints "ITEM<TAB>VALUE<TAB>UNIT" per row of a `juicefs bench` table
  data_ops.py fio JSON read|write MIB|IOPS       prints the bandwidth (MiB/s) or IOPS of fio's first job
  data_ops.py epoch DIR READERS SEED             reads every file under DIR once, in a shuffled order, with READERS
                                                 processes (a training epoch); prints files/s
  data_ops.py requests URL                       prints "PUT GET" object requests a mount counted so far (its metrics at URL)
  data_ops.py report RESULTS A B [C]             prints the table of RESULTS rows "WORKLOAD<TAB>FS<TAB>VALUE<TAB>UNIT"
                                                 (with C, a column for it and A/C)
"""

import json
import os
import re
import sys
import threading
import time
import urllib.request


def parse_size(s):
    """`16K`, `1M`, `4096`: sizes as the shell script's variables give them."""
    m = re.fullmatch(r"(\d+)([KMG]?)i?B?", s.strip(), re.IGNORECASE)
    if not m:
        sys.exit(f"data_ops.py: {s!r} is not a size (examples: 16K, 1M, 4096)")
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2).upper()]


def small_write(d, files, size):
    os.makedirs(d, exist_ok=True)
    data = os.urandom(size)
    t = time.perf_counter()
    for i in range(files):
        fd = os.open(os.path.join(d, f"f{i:06d}"), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    print(f"{files / (time.perf_counter() - t):.1f}")


def read_whole(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        while os.read(fd, 1 << 20):
            pass
    finally:
        os.close(fd)


def small_read(d, readers):
    names = sorted(os.listdir(d))
    errors = []
    next_i = [0]
    lock = threading.Lock()

    def reader():
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= len(names):
                return
            try:
                read_whole(os.path.join(d, names[i]))
            except OSError as e:
                errors.append(f"{names[i]}: {e}")

    threads = [threading.Thread(target=reader) for _ in range(readers)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    secs = time.perf_counter() - t
    if errors:
        sys.exit(f"data_ops.py: {len(errors)} files could not be read, first: {errors[0]}")
    print(f"{len(names) / secs:.1f}")


def jfs_bench(path):
    """Rows like `|   Write big file |    296.32 MiB/s |  0.22 s/file |`."""
    wanted = ("Write big file", "Read big file", "Write small file", "Read small file", "Stat file")
    text = re.sub(r"\x1b\[[0-9;]*m", "", open(path).read())  # colours, if any
    found = 0
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0] in wanted:
            value, unit = cells[1].split(maxsplit=1)
            print(f"{cells[0]}\t{value}\t{unit}")
            found += 1
    if found == 0:
        sys.exit(f"data_ops.py: no result table in {path}")


def fio(path, rw, what):
    text = open(path).read()
    # fio may print notes before the JSON document.
    job = json.loads(text[text.index("{"):])["jobs"][0][rw]
    if job.get("io_bytes", 0) == 0:
        sys.exit(f"data_ops.py: fio moved no data ({path})")
    print(f"{job['bw_bytes'] / (1 << 20):.2f}" if what == "MIB" else f"{job['iops']:.1f}")


def epoch(d, readers, seed):
    import multiprocessing as mp
    import random

    names = sorted(os.path.join(root, f) for root, _, files in os.walk(d) for f in files)
    if not names:
        sys.exit(f"data_ops.py: no files under {d}")
    random.Random(seed).shuffle(names)

    def read_all(mine, barrier, failures):
        barrier.wait()
        for n in mine:
            try:
                read_whole(n)
            except OSError as e:
                failures.put(f"{n}: {e}")
                return

    ctx = mp.get_context("fork")
    barrier, failures = ctx.Barrier(readers + 1), ctx.Queue()
    procs = [ctx.Process(target=read_all, args=(names[i::readers], barrier, failures)) for i in range(readers)]
    for p in procs:
        p.start()
    barrier.wait()
    t = time.perf_counter()
    for p in procs:
        p.join()
    secs = time.perf_counter() - t
    if not failures.empty():
        sys.exit(f"data_ops.py: read failed: {failures.get()}")
    print(f"{len(names) / secs:.1f}")


def requests(url):
    """PUTs and GETs (every attempt) a mount counted: Strata's
    `strata_object_requests_total{kind}`, JuiceFS's
    `juicefs_object_request_durations_histogram_seconds_count{method}`."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    counts = {"PUT": 0.0, "GET": 0.0}
    for line in text.splitlines():
        m = re.match(r'strata_object_requests_total\{kind="(\w+)"\} (\S+)', line) or re.match(
            r'juicefs_object_request_durations_histogram_seconds_count\{[^}]*method="(\w+)"[^}]*\} (\S+)', line
        )
        if m and m.group(1) in counts:
            counts[m.group(1)] += float(m.group(2))
    print(f"{counts['PUT']:.0f} {counts['GET']:.0f}")


def report(path, a, b, c=None):
    rows, order = {}, []
    for line in open(path):
        workload, fs, value, unit = line.rstrip("\n").split("\t")
        if workload not in rows:
            rows[workload] = {"unit": unit}
            order.append(workload)
        rows[workload][fs] = value
    def ratio(x, y):
        try:
            return f"{float(x) / float(y):.2f}"
        except (ValueError, ZeroDivisionError):
            return "-"

    head = ["workload", "unit", a, b, f"{a}/{b}"] + ([c, f"{a}/{c}"] if c else [])
    table = [head]
    for w in order:
        r = rows[w]
        va, vb = r.get(a, "-"), r.get(b, "-")
        row = [w, r["unit"], va, vb, ratio(va, vb)]
        if c:
            vc = r.get(c, "-")
            row += [vc, ratio(va, vc) if vc != "-" else "-"]
        table.append(row)
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    print(rule)
    for n, row in enumerate(table):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(row[2:], widths[2:])]
        print("| " + " | ".join(cells) + " |")
        if n == 0:
            print(rule)
    print(rule)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "small-write":
        small_write(args[0], int(args[1]), parse_size(args[2]))
    elif cmd == "small-read":
        small_read(args[0], int(args[1]))
    elif cmd == "jfs-bench":
        jfs_bench(args[0])
    elif cmd == "fio":
        fio(args[0], args[1], args[2])
    elif cmd == "epoch":
        epoch(args[0], int(args[1]), int(args[2]))
    elif cmd == "requests":
        requests(args[0])
    elif cmd == "report":
        report(*args[:4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
