#!/usr/bin/env python3
"""The authors' PyTorch LRURec beside ours: load our weights into it, or train it.

    python3 scripts/lru_torch.py check --authors DIR --dataset DATASET --run RUN [--tol 1e-4]
    python3 scripts/lru_torch.py train --authors DIR --dataset DATASET --out LOG.jsonl [--seed S --epochs N]

DIR is a checkout of the authors' code (MLLM4Rec or LlamaRec: the folder that holds
model/lru.py); only that file is imported. Needs python3-torch (Debian: apt-get install
python3-torch) and numpy; safetensors files are read directly.

check: builds their LRURec with the shape stored in RUN/retriever.safetensors, loads
our weights (each complex tensor X is stored as X.real and X.imag) with strict=True,
scores every row of RUN/candidates.tsv from the same input the C code used (val: the
training items; test: training + validation item; the last max-length items,
left-padded with 0), masks the user's history and the padding item, and checks that
the listed candidates' scores agree to --tol and that nothing outside the list scores
above the 20th listed score by more than --tol. Exit 0 when all agree, 1 when not.

train: the peer for quality. Trains their LRURec with their recipe (LlamaRec's
trainer as DESIGN.md section 7 describes it: sliding windows, cross-entropy with
label 0 ignored, AdamW lr 1e-3 / eps 1e-9 / weight decay 0.01 off "bias" and
"layer_norm", gradient norm clipped to 5, shuffled batches of 16 (MovieLens) or 64)
on an mllm4rec dataset, and after every epoch writes one JSON line with the training
loss and val and test metrics computed as ours are (per user, whole history and
padding masked, ties to the lower item id). It stops as `retriever train` does on a
dataset whose epoch is shorter than --val-every (after --patience validations without
a strictly better val Recall@10) and ends with a "final" line holding the best epoch's
val and test metrics. Use it to compare learning curves and results on the same data;
it saves no model.

Exit status 2 on bad input.
"""
import argparse
import json
import os
import struct
import sys
import time



def fail(msg, code=2):
    print("lru_torch: " + msg, file=sys.stderr)
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
        if info.get("dtype") != "F32":
            fail("%s: tensor %s has dtype %s, expected F32" % (path, name, info.get("dtype")))
        begin, end = info["data_offsets"]
        arr = np.frombuffer(data[begin:end], dtype="<f4")
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


def build_model(lru, num_items, hidden, blocks, dropout, max_len):
    args = Args()
    args.num_items = num_items
    args.bert_hidden_units = hidden
    args.bert_num_blocks = blocks
    args.bert_dropout = dropout
    args.bert_attn_dropout = dropout
    args.bert_max_len = max_len
    return lru.LRURec(args)


def masked_last_scores(torch, model, hists, max_len):
    """Scores at the last position for each history (its last max_len items,
    left-padded with 0), with the padding item and the whole history set to -inf."""
    x = torch.LongTensor([[0] * (max_len - len(h[-max_len:])) + h[-max_len:] for h in hists])
    out = model(x)[:, -1, :]
    for h, s in zip(hists, out):
        s[0] = -float("inf")
        s[torch.LongTensor(h)] = -float("inf")
    return out


def import_authors_lru(authors):
    """Their model/lru.py as a module (the file itself: the package pulls in the LLM side)."""
    path = os.path.join(authors, "model", "lru.py")
    if not os.path.isfile(path):
        fail("%s: no model/lru.py there (give the authors' checkout)" % authors)
    import importlib.util
    spec = importlib.util.spec_from_file_location("authors_lru", path)
    lru = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lru)
    return lru


def need_torch():
    try:
        import numpy
        import torch
    except ImportError as err:
        fail("needs numpy and torch (Debian: apt-get install python3-torch): %s" % err)
    return numpy, torch


def check(a):
    np, torch = need_torch()
    lru = import_authors_lru(a.authors)

    tensors, meta = read_safetensors(os.path.join(a.run, "retriever.safetensors"), np)
    if "embedding.token.weight" not in tensors:
        fail("%s: no embedding.token.weight: not an LRURec checkpoint" % a.run)
    vocab, hidden = tensors["embedding.token.weight"].shape
    blocks = 0
    while "model.lru_blocks.%d.lru_layer.params_log" % blocks in tensors:
        blocks += 1
    max_len = int(meta.get("max_len", 200))

    model = build_model(lru, vocab - 1, hidden, blocks, 0.0, max_len)
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
            for (split, user, items, scores), s in zip(chunk, masked_last_scores(torch, model, hists, max_len)):
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


def evaluate(torch, np, model, seqs, split, max_len):
    """Per-user Recall / NDCG / MRR at 1, 5, 10, 20, 50, ranked as ours are:
    the rank is the number of items scoring higher plus equal-scored lower ids."""
    model.eval()
    users = sorted(seqs)
    ranks = []
    with torch.no_grad():
        for b in range(0, len(users), 64):
            chunk = users[b:b + 64]
            cut = 2 if split == "val" else 1
            hists = [seqs[u][:-cut] for u in chunk]
            targets = [seqs[u][-cut] for u in chunk]
            for s, t in zip(masked_last_scores(torch, model, hists, max_len), targets):
                ranks.append(int((s > s[t]).sum()) + int((s[:t] == s[t]).sum()))
    model.train()
    ranks = np.array(ranks)
    m = {}
    for k in (1, 5, 10, 20, 50):
        hit = ranks < k
        m["Recall@%d" % k] = float(hit.mean())
        m["NDCG@%d" % k] = float((hit / np.log2(ranks + 2)).mean())
        m["MRR@%d" % k] = float((hit / (ranks + 1)).mean())
    return m


def train(a):
    np, torch = need_torch()
    lru = import_authors_lru(a.authors)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    seqs = read_sequences(os.path.join(a.dataset, "sequences.tsv"))
    if not seqs:
        fail("%s: no users" % a.dataset)
    try:
        with open(os.path.join(a.dataset, "meta.json"), encoding="utf-8") as f:
            movielens = json.load(f).get("format") == "movielens"
    except (OSError, ValueError):
        fail("%s: no readable meta.json" % a.dataset)
    L = a.max_len or (200 if movielens else 50)
    batch = a.batch or (16 if movielens else 64)
    n_items = max(max(s) for s in seqs.values())

    # LlamaRec's LRUTrainDataset with sliding step = max length
    windows = []
    for u in sorted(seqs):
        s = seqs[u][:-2]
        if len(s) < 2 * L:
            windows.append(s)
        else:
            windows += [s[i:i + L] for i in range(len(s) - L, -1, -L)]
    tokens = torch.LongTensor([[0] * (L - len(w[:-1][-L:])) + w[:-1][-L:] for w in windows])
    labels = torch.LongTensor([[0] * (L - len(w[-L:])) + w[-L:] for w in windows])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens, labels), batch_size=batch,
                                         shuffle=True)
    model = build_model(lru, n_items, 64, 2, 0.2, L)
    named = list(model.named_parameters())
    no_decay = ("bias", "layer_norm")
    opt = torch.optim.AdamW([
        {"params": [p for n, p in named if not any(x in n for x in no_decay)], "weight_decay": 0.01},
        {"params": [p for n, p in named if any(x in n for x in no_decay)], "weight_decay": 0.0}],
        lr=1e-3, eps=1e-9)
    ce = torch.nn.CrossEntropyLoss(ignore_index=0)
    t0 = time.time()
    iteration = 0
    best, bad = None, 0
    with open(a.out, "w", encoding="utf-8") as log:
        for epoch in range(1, a.epochs + 1):
            model.train()
            total, n = 0.0, 0
            for x, y in loader:
                opt.zero_grad()
                logits = model(x)
                loss = ce(logits.view(-1, logits.size(-1)), y.view(-1))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
                iteration += 1
                total += loss.item()
                n += 1
            val = evaluate(torch, np, model, seqs, "val", L)
            test = evaluate(torch, np, model, seqs, "test", L)
            line = {"epoch": epoch, "iter": iteration, "train_loss": total / n, "val": val, "test": test,
                    "seconds": time.time() - t0}
            log.write(json.dumps(line) + "\n")
            log.flush()
            print("epoch %d: train loss %.4f, val Recall@10 %.4f, test Recall@10 %.4f (%.0f s)"
                  % (epoch, total / n, val["Recall@10"], test["Recall@10"], time.time() - t0), flush=True)
            # early stopping as ours with one validation per epoch: strictly better replaces the best
            if best is None or val["Recall@10"] > best["val"]["Recall@10"]:
                best, bad = line, 0
            else:
                bad += 1
                if a.patience and bad >= a.patience:
                    break
        log.write(json.dumps({"final": True, "best_epoch": best["epoch"], "epochs": epoch, "val": best["val"],
                              "test": best["test"]}) + "\n")
    print("best epoch %d of %d: val Recall@10 %.4f; test Recall@10 %.4f NDCG@10 %.4f MRR@10 %.4f"
          % (best["epoch"], epoch, best["val"]["Recall@10"], best["test"]["Recall@10"], best["test"]["NDCG@10"],
             best["test"]["MRR@10"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="load RUN into the authors' LRURec and compare with candidates.tsv")
    c.add_argument("--authors", required=True, help="checkout of the authors' code (holds model/lru.py)")
    c.add_argument("--dataset", required=True, help="the prepared dataset the run was trained on")
    c.add_argument("--run", required=True, help="the retriever run folder")
    c.add_argument("--tol", type=float, default=1e-4)
    t = sub.add_parser("train", help="train the authors' LRURec with their recipe, logging every epoch")
    t.add_argument("--authors", required=True, help="checkout of the authors' code (holds model/lru.py)")
    t.add_argument("--dataset", required=True, help="a prepared dataset")
    t.add_argument("--out", required=True, help="JSON-lines log to write")
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--epochs", type=int, default=500)
    t.add_argument("--patience", type=int, default=20, help="epochs without a better val Recall@10 (0: never stop)")
    t.add_argument("--max-len", type=int, default=0, help="default 200 (MovieLens) or 50")
    t.add_argument("--batch", type=int, default=0, help="default 16 (MovieLens) or 64")
    t.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    check(a) if a.command == "check" else train(a)


if __name__ == "__main__":
    main()
