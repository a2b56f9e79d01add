#!/usr/bin/env python3
"""Load an mllm4rec retriever run into the authors' PyTorch LRURec and compare.

    python3 scripts/lru_torch_check.py --authors DIR --dataset DATASET --run RUN [--tol 1e-4]

DIR is a checkout of the authors' code (MLLM4Rec or LlamaRec: the folder that holds
model/lru.py). The script builds their LRURec with the shape stored in
RUN/retriever.safetensors, loads our weights into it (each complex tensor X is
stored as X.real and X.imag), scores every user of RUN/candidates.tsv from the same
history the C code used (val: the training items; test: training + validation
item; the last max-length items, left-padded with 0), masks the user's history and
the padding item, and checks that
  - the scores of the listed candidates agree to --tol, and
  - no item outside the list scores above the 20th listed score by more than --tol
    (so the list is PyTorch's top 20, up to ties).
It needs python3-torch (Debian: apt-get install python3-torch) and numpy; the
safetensors file is read directly, without the safetensors package.
Exit status: 0 when everything agrees, 1 when something differs, 2 on bad input.
"""
import argparse
import json
import os
import struct
import sys

DTYPES = {"F32": "<f4", "F64": "<f8", "I32": "<i4", "I64": "<i8"}


def fail(msg, code=2):
    print("lru_torch_check: " + msg, file=sys.stderr)
    sys.exit(code)


def read_safetensors(path, np):
    """Return ({name: array}, metadata) of a safetensors file."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as err:
        fail("%s: %s" % (path, err.strerror))
    if len(blob) < 8:
        fail("%s: too short to be a safetensors file" % path)
    (n,) = struct.unpack("<Q", blob[:8])
    if n > len(blob) - 8:
        fail("%s: header length %d runs past the end of the file" % (path, n))
    try:
        header = json.loads(blob[8:8 + n])
    except ValueError:
        fail("%s: the header is not JSON" % path)
    meta = header.pop("__metadata__", {}) or {}
    data = blob[8 + n:]
    tensors = {}
    for name, info in header.items():
        if info.get("dtype") not in DTYPES:
            fail("%s: tensor %s has dtype %s, expected F32" % (path, name, info.get("dtype")))
        begin, end = info["data_offsets"]
        arr = np.frombuffer(data[begin:end], dtype=DTYPES[info["dtype"]])
        tensors[name] = arr.reshape(info["shape"]).copy()
    return tensors, meta


def read_sequences(path):
    seqs = {}
    try:
        with open(path, encoding="utf-8") as f:
            head = f.readline().rstrip("\n").split("\t")
            if head[:1] != ["user_id"] or "items" not in head:
                fail("%s: expected a header with user_id and items" % path)
            col = head.index("items")
            for line_no, line in enumerate(f, 2):
                cells = line.rstrip("\n").split("\t")
                try:
                    seqs[int(cells[0])] = [int(x) for x in cells[col].split()]
                except (ValueError, IndexError):
                    fail("%s:%d: bad row" % (path, line_no))
    except OSError as err:
        fail("%s: %s" % (path, err.strerror))
    return seqs


def read_candidates(path):
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            head = f.readline().rstrip("\n").split("\t")
            if head != ["split", "user_id", "label", "items", "scores"]:
                fail("%s: unexpected header %r" % (path, head))
            for line_no, line in enumerate(f, 2):
                cells = line.rstrip("\n").split("\t")
                try:
                    items = [int(x) for x in cells[3].split(",")]
                    scores = [float(x) for x in cells[4].split(",")]
                    rows.append((cells[0], int(cells[1]), items, scores))
                except (ValueError, IndexError):
                    fail("%s:%d: bad row" % (path, line_no))
    except OSError as err:
        fail("%s: %s" % (path, err.strerror))
    return rows


class Args:
    """The attributes the authors' LRURec constructor reads."""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--authors", required=True, help="checkout of the authors' code (holds model/lru.py)")
    ap.add_argument("--dataset", required=True, help="the prepared dataset the run was trained on")
    ap.add_argument("--run", required=True, help="the retriever run folder")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()

    if not os.path.isfile(os.path.join(a.authors, "model", "lru.py")):
        fail("%s: no model/lru.py there (give the authors' checkout)" % a.authors)
    try:
        import numpy as np
        import torch
    except ImportError as err:
        fail("needs numpy and torch (Debian: apt-get install python3-torch): %s" % err)
    sys.path.insert(0, a.authors)
    # Import the file itself, not the package: the package __init__ pulls in the LLM side.
    import importlib.util
    spec = importlib.util.spec_from_file_location("authors_lru", os.path.join(a.authors, "model", "lru.py"))
    lru = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lru)

    tensors, meta = read_safetensors(os.path.join(a.run, "retriever.safetensors"), np)
    if "embedding.token.weight" not in tensors:
        fail("%s: no embedding.token.weight: not an LRURec checkpoint" % a.run)
    vocab, hidden = tensors["embedding.token.weight"].shape
    blocks = 0
    while "model.lru_blocks.%d.lru_layer.params_log" % blocks in tensors:
        blocks += 1
    max_len = int(meta.get("max_len", 200))

    args = Args()
    args.num_items = vocab - 1
    args.bert_hidden_units = hidden
    args.bert_num_blocks = blocks
    args.bert_dropout = 0.0
    args.bert_attn_dropout = 0.0
    args.bert_max_len = max_len
    model = lru.LRURec(args)
    state = {}
    for name, arr in tensors.items():
        if name.endswith(".imag"):
            continue
        if name.endswith(".real"):
            base = name[:-5]
            if base + ".imag" not in tensors:
                fail("%s has no matching .imag tensor" % name)
            state[base] = torch.complex(torch.from_numpy(arr), torch.from_numpy(tensors[base + ".imag"]))
        else:
            state[name] = torch.from_numpy(arr)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        fail("the authors' LRURec does not accept the checkpoint: %s" % err, 1)
    model.eval()

    seqs = read_sequences(os.path.join(a.dataset, "sequences.tsv"))
    rows = read_candidates(os.path.join(a.run, "candidates.tsv"))
    worst_listed = 0.0
    worst_outside = -float("inf")
    order_differs = 0
    batch = 64
    with torch.no_grad():
        for b in range(0, len(rows), batch):
            chunk = rows[b:b + batch]
            hists = []
            for split, user, items, scores in chunk:
                if user not in seqs:
                    fail("candidates.tsv names user %d, who is not in the dataset" % user)
                seq = seqs[user]
                hists.append(seq[:-2] if split == "val" else seq[:-1])
            x = torch.LongTensor([[0] * (max_len - len(h[-max_len:])) + h[-max_len:] for h in hists])
            out = model(x)[:, -1, :]
            for (split, user, items, scores), h, s in zip(chunk, hists, out):
                s = s.clone()
                s[0] = -float("inf")
                s[torch.LongTensor(h)] = -float("inf")
                if torch.topk(s, len(items)).indices.tolist() != items:
                    order_differs += 1
                listed = s[torch.LongTensor(items)]
                worst_listed = max(worst_listed, float((listed - torch.tensor(scores)).abs().max()))
                s[torch.LongTensor(items)] = -float("inf")
                worst_outside = max(worst_outside, float(s.max()) - scores[-1])
    ok = worst_listed <= a.tol and worst_outside <= a.tol
    print("users checked: %d (val and test rows of candidates.tsv)" % len(rows))
    print("max |score difference| over the listed candidates: %.3g (tolerance %g)" % (worst_listed, a.tol))
    print("largest score outside the list minus the 20th listed score: %.3g" % worst_outside)
    print("rows whose top-%d order differs from PyTorch's (ties or near-ties): %d" % (len(rows[0][2]) if rows else 0,
                                                                                   order_differs))
    print("OK" if ok else "DIFFERENT")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
