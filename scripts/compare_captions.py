#!/usr/bin/env python3
"""Compares two captions.tsv files (header "source_id<TAB>caption") made from the
same images, e.g. with two --decoder-type values: prints how many captions are
identical and every pair that differs.

    python3 scripts/compare_captions.py A/captions.tsv B/captions.tsv [--most N]
"""
import argparse


def load(path):
    rows = {}
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n")
        if header != "source_id\tcaption":
            raise SystemExit(f"{path}: expected the header 'source_id<TAB>caption'")
        for line in f:
            line = line.rstrip("\n")
            if line:
                key, caption = line.split("\t", 1)
                rows[key] = caption
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--most", type=int, default=-1, help="print at most N differing pairs (default all)")
    args = ap.parse_args()
    a, b = load(args.a), load(args.b)
    keys = [k for k in a if k in b]
    diff = [k for k in keys if a[k] != b[k]]
    same = len(keys) - len(diff)
    print(f"{len(keys)} images in both files; {same} captions identical ({100.0 * same / max(len(keys), 1):.1f}%), "
          f"{len(diff)} differ")
    for k in diff[: None if args.most < 0 else args.most]:
        print(f"{k}\t{a[k]}\n{' ' * len(k)}\t{b[k]}")


if __name__ == "__main__":
    main()
