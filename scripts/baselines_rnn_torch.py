#!/usr/bin/env python3
"""PyTorch references of GRU4Rec and NARM, the recurrent retrievers of issue 15.

    python3 scripts/baselines_rnn_torch.py baselines [--out tests/data/baselines]
    python3 scripts/baselines_rnn_torch.py train --dataset D --arch gru4rec|narm --seed S --out LOG.jsonl [--resume]
    python3 scripts/baselines_rnn_torch.py time --dataset D --arch gru4rec|narm [--threads 2]

Needs Debian's python3-torch and numpy (run it with /usr/bin/python3 when another
python3 comes first on PATH).

The models are written from the papers and the public reference code, with the
reference's state_dict names, so a retriever.safetensors of ours loads into them with
strict=True:
  - GRU4Rec: hidasib/GRU4Rec_PyTorch_Official, gru4rec_pytorch.py (GRU4RecModel with
    its default constrained_embedding=True: the input embedding is the output item
    embedding Wy; GRUCell layers G.i; dropout DE on the embedding and D[i] after each
    layer, the dropped-out state being the one carried to the next step, as the
    official hidden_step does; scores = h Wy^T + By^T); init as its fit()'s default
    compatibility mode (uniform +-sqrt(6 / (fan_in + fan_out)) per gate block, zero
    biases).
  - NARM: Yueeeeeeee/RecSys-Extraction-Attack, model/narm.py (NARMEmbedding +
    NARMModel: GRU with hidden 2 x hidden, global encoder = last state, local encoder =
    attention through A_global, A_local, a hard sigmoid and v, the bilinear decoder
    b_vetor against the item embeddings; truncated normal init std 0.02 within +-0.04).

Training follows LlamaRec's trainer as scripts/lru_torch.py does (the same windows,
AdamW lr 1e-3 / eps 1e-9 / weight decay 0.01 off "bias" and "layer_norm", gradient
norm clipped to 5, cross-entropy over all items, early stopping on val Recall@10,
per-user metrics with the whole history masked and ties to the lower id), NOT
GRU4Rec's session-parallel sampled training. A window's first row (input = padding,
label = the user's first item) is not scored: neither reference predicts a
sequence's first item. NARM scores every other labelled row from its own prefix
(global and local encoders over the rows up to it): the reference trains on every
prefix of a training sequence (dataloader/rnn.py), one prediction each.

baselines: the tiny configurations whose outputs tests/test_baselines_rnn.c compares
with the C models: per architecture a safetensors file with the weights (state_dict
names), the batch, scores_last's scores, the training loss and every parameter's
gradient, computed in float64 (dropout 0: the C side's keyed masks are tested there).
For NARM the per-prefix loss is computed literally, one reference forward (packed
sequence) per prefix, and checked against the batched form train uses.
"""
import argparse
import json
import math
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def fail(msg, code=2):
    print("baselines_rnn_torch: " + msg, file=sys.stderr)
    sys.exit(code)


try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
except ImportError as err:
    fail("needs numpy and torch (Debian: apt-get install python3-torch; run /usr/bin/python3): %s" % err)


# ---------------------------------------------------------------- GRU4Rec


class GRU4Rec(nn.Module):
    """GRU4RecModel with constrained embedding; forward over left-aligned sequences."""

    def __init__(self, n_items, hidden, layers, dropout):
        super().__init__()
        self.DE = nn.Dropout(dropout)
        self.G = nn.ModuleList([nn.GRUCell(hidden, hidden) for _ in range(layers)])
        self.D = nn.ModuleList([nn.Dropout(dropout) for _ in range(layers)])
        self.Wy = nn.Embedding(n_items + 1, hidden)
        self.By = nn.Embedding(n_items + 1, 1)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        # the official fit()'s compatibility mode: every [in, out] block uniform in +-sqrt(6 / (in + out))
        def uni(t, rows, cols):
            s = math.sqrt(6.0 / (rows + cols))
            t.uniform_(-s, s)
        for g in self.G:
            h = g.hidden_size
            uni(g.weight_ih, g.input_size, h)
            uni(g.weight_hh, h, h)
            g.bias_ih.zero_()
            g.bias_hh.zero_()
        uni(self.Wy.weight, self.Wy.num_embeddings, self.Wy.embedding_dim)
        self.By.weight.zero_()

    def hidden_states(self, x):
        """x [B, T] left-aligned items -> the top layer's state at every step [B, T, H]."""
        B, T = x.shape
        H = [torch.zeros(B, g.hidden_size, dtype=self.Wy.weight.dtype) for g in self.G]
        out = []
        for t in range(T):
            X = self.DE(self.Wy(x[:, t]))
            for i, g in enumerate(self.G):
                X = self.D[i](g(X, H[i]))
                H[i] = X
            out.append(X)
        return torch.stack(out, 1)

    def scores(self, states):
        return states @ self.Wy.weight.T + self.By.weight.T


# ---------------------------------------------------------------- NARM (model/narm.py)


class HardSigmoid(nn.Module):
    def forward(self, x):
        return torch.clamp((x / 6 + 0.5), min=0., max=1.)


class NARMEmbedding(nn.Module):
    def __init__(self, n_items, hidden, dropout):
        super().__init__()
        self.token = nn.Embedding(n_items + 1, hidden)
        self.embed_dropout = nn.Dropout(dropout)

    def forward(self, x, lengths):
        mask = ((x > 0) * 1)[:, :max(lengths)]
        return self.embed_dropout(self.token(x)), mask


class NARMModel(nn.Module):
    def __init__(self, hidden, attn_dropout):
        super().__init__()
        embed_size, hidden_size = hidden, 2 * hidden
        self.gru = nn.GRU(embed_size, hidden_size, num_layers=1, batch_first=True)
        self.a_global = nn.Linear(hidden_size, hidden_size, bias=False)
        self.a_local = nn.Linear(hidden_size, hidden_size, bias=False)
        self.act = HardSigmoid()
        self.v_vector = nn.Linear(hidden_size, 1, bias=False)
        self.proj_dropout = nn.Dropout(attn_dropout)
        self.b_vetor = nn.Linear(embed_size, 2 * hidden_size, bias=False)

    def forward(self, x, embedding_weight, lengths, mask):
        """The reference's forward: one prediction per (right-padded) sequence."""
        x = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        gru_out, hidden = self.gru(x)
        gru_out, _ = pad_packed_sequence(gru_out, batch_first=True)
        c_global = hidden[-1]
        state2 = self.a_local(gru_out)
        state1 = self.a_global(c_global).unsqueeze(1).expand_as(state2)
        state1 = mask.unsqueeze(2).expand_as(state2) * state1
        alpha = self.act(state1 + state2).view(-1, state1.size(-1))
        attn = self.v_vector(alpha).view(mask.size())
        attn = F.softmax(attn.masked_fill(mask == 0, -1e9), dim=-1)
        c_local = torch.sum(attn.unsqueeze(2).expand_as(gru_out) * gru_out, 1)
        proj = self.proj_dropout(torch.cat([c_global, c_local], 1))
        return torch.matmul(proj, self.b_vetor(embedding_weight).permute(1, 0))

    def prefix_scores(self, x, lengths, embedding_weight, emb, select):
        """Every prefix at once: emb [B, T, D] of left-aligned sequences; the scores of the
        prefix ending at each selected position (select [B, T] bool, rows in
        select.nonzero() order), as forward would give for that prefix alone: the GRU is
        causal, so its state at j is the prefix's last state, and the local encoder
        attends over positions 0..j. One sequence at a time, over its own length: a
        masked position's weight is exactly 0, so attending over n rather than T
        positions is the same function and saves the padding's work."""
        gru_out, _ = self.gru(emb)                   # [B, T, H]; steps past a length are never read
        q = self.a_global(gru_out)                   # [B, T(j), H]
        k = self.a_local(gru_out)                    # [B, T(t), H]
        out = []
        for b, n in enumerate(lengths):
            js = select[b, :n].nonzero(as_tuple=True)[0]
            if len(js) == 0:
                continue
            alpha = self.act(q[b, js].unsqueeze(1) + k[b, :n].unsqueeze(0))      # [m, n, H]
            causal = torch.arange(n).unsqueeze(0) <= js.unsqueeze(1)            # [m, n]
            e = self.v_vector(alpha).squeeze(-1).masked_fill(~causal, -1e9)
            c_local = F.softmax(e, dim=-1) @ gru_out[b, :n]                    # [m, H]
            out.append(torch.cat([gru_out[b, js], c_local], 1))
        proj = self.proj_dropout(torch.cat(out, 0))
        return torch.matmul(proj, self.b_vetor(embedding_weight).permute(1, 0))


class NARM(nn.Module):
    def __init__(self, n_items, hidden, dropout, attn_dropout):
        super().__init__()
        self.embedding = NARMEmbedding(n_items, hidden, dropout)
        self.model = NARMModel(hidden, attn_dropout)
        self.truncated_normal_init()

    @torch.no_grad()
    def truncated_normal_init(self, mean=0, std=0.02, lower=-0.04, upper=0.04):
        lo = (1. + math.erf(((lower - mean) / std) / math.sqrt(2.))) / 2.
        up = (1. + math.erf(((upper - mean) / std) / math.sqrt(2.))) / 2.
        for p in self.parameters():
            p.uniform_(2 * lo - 1, 2 * up - 1)
            p.erfinv_()
            p.mul_(std * math.sqrt(2.))
            p.add_(mean)

    def forward(self, x, lengths):
        x, mask = self.embedding(x, lengths)
        return self.model(x, self.embedding.token.weight, lengths, mask)

    def prefix_scores(self, x, lengths, select):
        emb = self.embedding.embed_dropout(self.embedding.token(x))
        return self.model.prefix_scores(x, lengths, self.embedding.token.weight, emb, select)


def build(arch, n_items, hidden, blocks, dropout, attn_dropout):
    if arch == "gru4rec":
        return GRU4Rec(n_items, hidden, blocks, dropout)
    if arch == "narm":
        return NARM(n_items, hidden, dropout, attn_dropout)
    fail("unknown architecture %r (gru4rec or narm)" % arch)


# ---------------------------------------------------------------- batches


def compact(tokens, labels):
    """One packed sequence's rows without a leading padding input (see the docstring)."""
    if tokens and tokens[0] == 0:
        return tokens[1:], labels[1:]
    return tokens, labels


def left_aligned(seqs, T=None):
    """[(tokens, labels)] -> x [B, T], y [B, T] (0-padded on the right), lengths."""
    T = T or max(1, max(len(t) for t, _ in seqs))
    x = torch.zeros(len(seqs), T, dtype=torch.long)
    y = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, (t, l) in enumerate(seqs):
        x[i, :len(t)] = torch.tensor(t, dtype=torch.long)
        y[i, :len(l)] = torch.tensor(l, dtype=torch.long)
    return x, y, [len(t) for t, _ in seqs]


def batch_loss(model, arch, seqs):
    """Mean cross-entropy over every labelled row of the compacted sequences."""
    x, y, lengths = left_aligned(seqs)
    sel = y > 0
    if arch == "gru4rec":
        logits = model.scores(model.hidden_states(x)[sel])
    else:
        logits = model.prefix_scores(x, lengths, sel)
    return F.cross_entropy(logits, y[sel])


def last_scores(model, arch, hists):
    """Scores for the item after each history (its items, left-aligned)."""
    x, _, lengths = left_aligned([(h, h) for h in hists])
    sel = torch.zeros_like(x, dtype=torch.bool)
    for i, n in enumerate(lengths):
        sel[i, n - 1] = True
    if arch == "gru4rec":
        return model.scores(model.hidden_states(x)[sel])
    return model.prefix_scores(x, lengths, sel)


# ---------------------------------------------------------------- safetensors


def write_safetensors(path, tensors, meta):
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        a = np.ascontiguousarray(arr, dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    header["__metadata__"] = {k: str(v) for k, v in meta.items()}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


# ---------------------------------------------------------------- baselines


# A tiny batch in the trainer's packed form: rows are the last rows of a window of
# max_len 8; a window starting at the user's first item begins with input 0.
TINY = dict(n_items=30, hidden=16, blocks=2, max_len=8)
TINY_SEQS = [
    # (tokens, labels) per sequence
    ([0, 3, 17, 17, 5, 29], [3, 17, 17, 5, 29, 11]),              # starts at the user's first item
    ([12, 4, 4, 30, 1, 8, 22, 9], [4, 4, 30, 1, 8, 22, 9, 2]),     # a full window from later in a history
    ([0, 7, 26], [7, 26, 13]),                                     # short, from the start
    ([21, 6, 15, 25, 2], [6, 15, 25, 2, 19]),                      # shorter than max_len, not from the start
]


def make_baseline(arch, out_dir):
    torch.manual_seed({"gru4rec": 1, "narm": 2}[arch])
    c = TINY
    model = build(arch, c["n_items"], c["hidden"], c["blocks"], 0.0, 0.0)
    if arch == "narm":
        # the reference's init is std 0.02: spread the weights so that every gradient is
        # far from rounding and the hard sigmoid sees both its slope and its flat parts
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.5)
    model = model.double()
    model.train()  # dropout 0: train and eval agree
    packed = [compact(t, l) for t, l in TINY_SEQS]

    model.zero_grad()
    loss = batch_loss(model, arch, packed)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}

    if arch == "narm":
        # the literal reference: one forward per prefix (right-padded, packed by length)
        prefixes, targets = [], []
        for t, l in packed:
            for j in range(len(t)):
                prefixes.append(t[:j + 1])
                targets.append(l[j])
        x = torch.zeros(len(prefixes), c["max_len"], dtype=torch.long)
        for i, p in enumerate(prefixes):
            x[i, :len(p)] = torch.tensor(p)
        model.zero_grad()
        ref = F.cross_entropy(model(x, torch.tensor([len(p) for p in prefixes])), torch.tensor(targets))
        ref.backward()
        worst = max(float((grads[n] - p.grad).abs().max()) for n, p in model.named_parameters())
        if abs(float(ref) - float(loss)) > 1e-10 or worst > 1e-10:
            fail("narm: batched prefixes differ from the reference's per-prefix forward (loss %g vs %g, grad %g)"
                 % (float(loss), float(ref), worst), 3)

    with torch.no_grad():
        scores = last_scores(model, arch, [t for t, _ in packed])

    tokens = [v for t, _ in TINY_SEQS for v in t]
    labels = [v for _, l in TINY_SEQS for v in l]
    starts = [0]
    for t, _ in TINY_SEQS:
        starts.append(starts[-1] + len(t))
    tensors = {}
    for n, p in model.state_dict().items():
        tensors[n] = p.numpy()
    for n, g in grads.items():
        tensors["grad." + n] = g.numpy()
    tensors["batch.tokens"] = np.array(tokens, dtype=np.float32)
    tensors["batch.labels"] = np.array(labels, dtype=np.float32)
    tensors["batch.seq_start"] = np.array(starts, dtype=np.float32)
    tensors["scores"] = scores.numpy()
    tensors["loss"] = np.array([float(loss)])
    meta = dict(c, arch=arch, dropout=0.0, attn_dropout=0.0, torch=torch.__version__,
                made_by="scripts/baselines_rnn_torch.py baselines")
    path = os.path.join(out_dir, arch + ".safetensors")
    write_safetensors(path, tensors, meta)
    print("%s: loss %.9f, %d tensors, %d bytes" % (path, float(loss), len(tensors), os.path.getsize(path)))


def baselines(a):
    torch.set_num_threads(1)
    os.makedirs(a.out, exist_ok=True)
    for arch in ("gru4rec", "narm"):
        make_baseline(arch, a.out)


# ---------------------------------------------------------------- training


def read_dataset(path):
    import lru_torch
    seqs = lru_torch.read_sequences(os.path.join(path, "sequences.tsv"))
    if not seqs:
        fail("%s: no users" % path)
    try:
        with open(os.path.join(path, "meta.json"), encoding="utf-8") as f:
            movielens = json.load(f).get("format") == "movielens"
    except (OSError, ValueError):
        fail("%s: no readable meta.json" % path)
    return seqs, movielens


def windows_of(seqs, L):
    """LlamaRec's training windows (step = max length) as compacted (tokens, labels)."""
    out = []
    for u in sorted(seqs):
        s = seqs[u][:-2]
        if len(s) < 2:
            continue
        ws = [s] if len(s) < 2 * L else [s[i:i + L] for i in range(len(s) - L, -1, -L)]
        for w in ws:
            n = len(w)
            r = min(n, L)
            # rows: labels w[n-r:], each input the item before it within the window (0 for
            # the window's first item, as the trainer's left padding gives); that row is dropped
            first = max(n - r, 1)
            out.append((w[first - 1:n - 1], w[first:n]))
    return out


def evaluate(model, arch, seqs, split, L):
    model.eval()
    users = sorted(seqs)
    ranks = []
    cut = 2 if split == "val" else 1
    with torch.no_grad():
        for b in range(0, len(users), 64):
            chunk = users[b:b + 64]
            hists = [seqs[u][:-cut][-L:] for u in chunk]
            full = [seqs[u][:-cut] for u in chunk]
            targets = [seqs[u][-cut] for u in chunk]
            s = last_scores(model, arch, hists)
            for row, h, t in zip(s, full, targets):
                row[0] = -float("inf")
                row[torch.LongTensor(h)] = -float("inf")
                ranks.append(int((row > row[t]).sum()) + int((row[:t] == row[t]).sum()))
    model.train()
    ranks = np.array(ranks)
    m = {}
    for k in (1, 5, 10, 20, 50):
        hit = ranks < k
        m["Recall@%d" % k] = float(hit.mean())
        m["NDCG@%d" % k] = float((hit / np.log2(ranks + 2)).mean())
        m["MRR@%d" % k] = float((hit / (ranks + 1)).mean())
    return m


def setup_training(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    seqs, movielens = read_dataset(a.dataset)
    L = a.max_len or (200 if movielens else 50)
    batch = a.batch or (16 if movielens else 64)
    n_items = max(max(s) for s in seqs.values())
    model = build(a.arch, n_items, a.hidden, a.blocks, a.dropout, a.dropout)
    named = list(model.named_parameters())
    no_decay = ("bias", "layer_norm")
    opt = torch.optim.AdamW([
        {"params": [p for n, p in named if not any(x in n for x in no_decay)], "weight_decay": 0.01},
        {"params": [p for n, p in named if any(x in n for x in no_decay)], "weight_decay": 0.0}],
        lr=1e-3, eps=1e-9)
    return seqs, L, batch, model, opt


def one_epoch(model, opt, arch, wins, batch, limit=0):
    model.train()
    order = torch.randperm(len(wins)).tolist()
    total, n = 0.0, 0
    for b in range(0, len(order), batch):
        opt.zero_grad()
        loss = batch_loss(model, arch, [wins[i] for i in order[b:b + batch]])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        total += loss.item()
        n += 1
        if limit and n >= limit:
            break
    return total / max(n, 1), n


def train(a):
    import torch_schedule
    seqs, L, batch, model, opt = setup_training(a)
    wins = windows_of(seqs, L)

    def validate():
        return evaluate(model, a.arch, seqs, "val", L), evaluate(model, a.arch, seqs, "test", L)

    torch_schedule.train_with_early_stopping(
        a.out, model, opt, lambda done: one_epoch(model, opt, a.arch, wins, batch, a.max_batches), validate,
        {"arch": a.arch, "seed": a.seed}, a.epochs, a.patience, a.resume)


def time_epoch(a):
    """One training epoch (forward, backward, clipping, AdamW over every window), timed."""
    seqs, L, batch, model, opt = setup_training(a)
    wins = windows_of(seqs, L)
    t0, c0 = time.time(), time.process_time()
    loss, n = one_epoch(model, opt, a.arch, wins, batch, a.max_batches)
    dt, dc = time.time() - t0, time.process_time() - c0
    print(json.dumps({"arch": a.arch, "seconds": dt, "cpu_seconds": dc, "batches": n, "windows": len(wins),
                      "loss": loss, "threads": a.threads}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("baselines", help="write the tiny reference files the C tests compare with")
    b.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
                                                  "baselines"))
    for name in ("train", "time"):
        t = sub.add_parser(name, help="train with LlamaRec's recipe, logging every epoch" if name == "train"
                           else "time one training epoch")
        t.add_argument("--dataset", required=True, help="a prepared dataset")
        t.add_argument("--arch", required=True, choices=("gru4rec", "narm"))
        t.add_argument("--seed", type=int, default=42)
        t.add_argument("--max-len", type=int, default=0, help="default 200 (MovieLens) or 50")
        t.add_argument("--batch", type=int, default=0, help="default 16 (MovieLens) or 64")
        t.add_argument("--hidden", type=int, default=64)
        t.add_argument("--blocks", type=int, default=2, help="GRU layers (GRU4Rec; NARM has one)")
        t.add_argument("--dropout", type=float, default=0.2)
        t.add_argument("--threads", type=int, default=2 if name == "time" else 1)
        t.add_argument("--max-batches", type=int, default=0, help="stop each epoch after N batches (0: all)")
        if name == "train":
            t.add_argument("--out", required=True, help="JSON-lines log to write (its checkpoint: OUT.ckpt)")
            t.add_argument("--resume", action="store_true", help="continue from OUT.ckpt when it exists")
            t.add_argument("--epochs", type=int, default=500)
            t.add_argument("--patience", type=int, default=20, help="epochs without a better val Recall@10")
    a = ap.parse_args()
    {"baselines": baselines, "train": train, "time": time_epoch}[a.command](a)


if __name__ == "__main__":
    main()
