#!/usr/bin/env python3
"""Makes a large `strata dump` file from a small one, for benchmarks that
need a filesystem of a million files without creating them one by one.

usage: make_dump.py TEMPLATE OUT FILES [PER_DIR]

TEMPLATE is the dump of a filesystem holding one directory `d` with one
file `f` (written through a mount, so every row has the exact shape this
Strata version writes). OUT gets FILES files in directories of PER_DIR
(default 1000) under the root, each a copy of `f` (same chunk map, so they
share its blocks: loading OUT borrows them)."""
import gzip
import json
import sys


def main():
    template, out, files = sys.argv[1], sys.argv[2], int(sys.argv[3])
    per_dir = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    with gzip.open(template, "rt") as t:
        lines = [json.loads(l) for l in t if l.strip()]
    header, fs = lines[0], lines[1]
    rows = [l["Row"] for l in lines if "Row" in l]
    inodes = {r["Inode"]["ino"]: r["Inode"] for r in rows if "Inode" in r}
    entries = [r["Entry"] for r in rows if "Entry" in r]
    chunks = [r["Chunk"] for r in rows if "Chunk" in r]
    d_entry = next(e for e in entries if e["parent"] == 1 and bytes(e["name"]) == b"d")
    f_entry = next(e for e in entries if e["parent"] == d_entry["entry"]["ino"] and bytes(e["name"]) == b"f")
    root, d, f = inodes[1], inodes[d_entry["entry"]["ino"]], inodes[f_entry["entry"]["ino"]]
    f_chunks = [c for c in chunks if c["ino"] == f["ino"]]
    ndirs = (files + per_dir - 1) // per_dir
    capacity = sum(p["end"] - p["start"] for p in fs["Fs"]["partitions"])
    if 1 + ndirs + files >= capacity:
        sys.exit(f"make_dump.py: {files} files need more than the template's {capacity} inode numbers")
    count = 0
    with gzip.open(out, "wt", compresslevel=1) as o:
        def row(r):
            nonlocal count
            count += 1
            o.write(json.dumps({"Row": r}, separators=(",", ":")) + "\n")
        o.write(json.dumps(header) + "\n")
        o.write(json.dumps(fs) + "\n")
        row({"Inode": dict(root, nlink=2 + ndirs)})
        next_ino = 2
        made = 0
        for k in range(ndirs):
            dino = next_ino
            next_ino += 1
            n = min(per_dir, files - made)
            row({"Inode": dict(d, ino=dino, parent=1, nlink=2)})
            row({"Entry": {"parent": 1, "name": list(b"d%06d" % k), "entry": {"ino": dino, "kind": "Dir"}}})
            for j in range(n):
                fino = next_ino
                next_ino += 1
                row({"Inode": dict(f, ino=fino, parent=dino)})
                row({"Entry": {"parent": dino, "name": list(b"f%06d" % j), "entry": {"ino": fino, "kind": f_entry["entry"]["kind"]}}})
                for c in f_chunks:
                    row({"Chunk": dict(c, ino=fino)})
            made += n
        o.write(json.dumps({"End": {"rows": count}}) + "\n")


main()
