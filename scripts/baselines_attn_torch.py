#!/usr/bin/python3
"""PyTorch references of the attention retrievers (SASRec, BERT4Rec, STOSA).

    python3 scripts/baselines_attn_torch.py baselines [--out tests/data/baselines]
    python3 scripts/baselines_attn_torch.py train --dataset D --arch sasrec --seed S --out LOG.jsonl [--resume]

The models are written as the public reference code writes them
(Yueeeeeeee/RecSys-Extraction-Attack: model/sasrec.py, model/bert.py,
model/attention.py, the cloze masking of dataloader/bert.py; zfan20/STOSA:
seqmodels.py, modules.py, trainers.py), with
the same module names, so their state_dict names are the ones our
retriever.safetensors holds. `baselines` runs each model in float64 on a tiny
configuration and writes, per architecture, a safetensors file with the weights
(state_dict names), the batch in our packed form (batch.tokens, batch.labels,
batch.seq_start), the scores at each sequence's last row (out.scores), the loss
(out.loss) and every parameter's gradient (grad.<name>). Dropout is 0 there: the
C side's keyed dropout is tested on its own. BERT4Rec's batch is stored already
masked (the C test takes it literally, its keyed masking is tested apart);
STOSA's holds the negatives (batch.negs) that the C side draws for key 99,
computed here with a port of its hash.

`train` trains one model with LlamaRec's recipe (the windows, AdamW, clipping,
early stopping and per-user metrics of scripts/lru_torch.py) as the quality
reference for ours; STOSA's negatives there are uniform over the items other
than the label, as ours are.

Run with Debian's python3-torch (/usr/bin/python3).
"""
import argparse
import json
import math
import os
import random
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_schedule  # noqa: E402


# --------------------------------------------------------------------------- the reference's modules

class TokenEmbedding(nn.Embedding):
    def __init__(self, vocab_size, embed_size):
        super().__init__(vocab_size, embed_size, padding_idx=0)


class PositionalEmbedding(nn.Module):
    """Positions 1.. over the non-padding tokens of a left-padded window, 0 on padding."""

    def __init__(self, max_len, d_model):
        super().__init__()
        self.pe = nn.Embedding(max_len + 1, d_model)

    def forward(self, x):
        pose = (x > 0) * (x > 0).sum(dim=-1).unsqueeze(1).repeat(1, x.size(-1))
        pose += torch.arange(start=-(x.size(1) - 1), end=1, step=1, device=x.device)
        pose = pose * (x > 0)
        return self.pe(pose)


class LayerNorm(nn.Module):
    """The reference's own layer norm: unbiased std, eps added to the std."""

    def __init__(self, features, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(features))
        self.bias = nn.Parameter(torch.zeros(features))
        self.eps = eps

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.weight * (x - mean) / (std + self.eps) + self.bias


def attention(query, key, value, mask, dropout, causal):
    scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(query.size(-1))
    scores = scores.masked_fill(mask == 0, -1e9)
    if causal:
        direction = torch.tril(torch.ones_like(scores))
        scores = scores.masked_fill(direction == 0, -1e9)
    p_attn = F.softmax(scores, dim=-1)
    p_attn = dropout(p_attn)
    return torch.matmul(p_attn, value)


class SASMultiHeadedAttention(nn.Module):
    def __init__(self, h, d_model, dropout):
        super().__init__()
        self.h = h
        self.head_size = d_model // h
        self.linear_layers = nn.ModuleList([nn.Linear(d_model, d_model) for _ in range(3)])
        self.dropout = nn.Dropout(p=dropout)
        self.layer_norm = LayerNorm(d_model)

    def forward(self, query, key, value, mask):
        B = query.size(0)
        q, k, v = [l(x).view(B, -1, self.h, self.head_size).transpose(1, 2)
                   for l, x in zip(self.linear_layers, (query, key, value))]
        x = attention(q, k, v, mask, self.dropout, causal=True)
        x = x.transpose(1, 2).contiguous().view(B, -1, self.h * self.head_size)
        return self.layer_norm(x + query)


class SASPositionwiseFeedForward(nn.Module):
    def __init__(self, d_model, d_ff, dropout):
        super().__init__()
        self.conv1 = nn.Conv1d(d_model, d_ff, kernel_size=1)
        self.activation = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(d_ff, d_model, kernel_size=1)
        self.layer_norm = LayerNorm(d_model)

    def forward(self, x):
        x_ = self.dropout(self.activation(self.conv1(x.permute(0, 2, 1))))
        return self.layer_norm(self.dropout(self.conv2(x_)).permute(0, 2, 1) + x)


class SASTransformerBlock(nn.Module):
    def __init__(self, hidden, heads, dropout, attn_dropout):
        super().__init__()
        self.layer_norm = LayerNorm(hidden)
        self.attention = SASMultiHeadedAttention(heads, hidden, attn_dropout)
        self.feed_forward = SASPositionwiseFeedForward(hidden, 4 * hidden, dropout)

    def forward(self, x, mask):
        x = self.attention(self.layer_norm(x), x, x, mask)
        return self.feed_forward(x)


class SASEmbedding(nn.Module):
    def __init__(self, n_items, hidden, max_len, dropout):
        super().__init__()
        self.token = TokenEmbedding(n_items + 1, hidden)
        self.position = PositionalEmbedding(max_len, hidden)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x):
        mask = (x > 0).unsqueeze(1).repeat(1, x.size(1), 1).unsqueeze(1)
        return self.dropout(self.token(x) + self.position(x)), mask


class SASModel(nn.Module):
    def __init__(self, hidden, heads, blocks, dropout, attn_dropout):
        super().__init__()
        self.transformer_blocks = nn.ModuleList(
            [SASTransformerBlock(hidden, heads, dropout, attn_dropout) for _ in range(blocks)])

    def forward(self, x, embedding_weight, mask):
        for block in self.transformer_blocks:
            x = block(x, mask)
        return torch.matmul(x, embedding_weight.permute(1, 0))


def truncated_normal_(params, mean=0.0, std=0.02, lower=-0.04, upper=0.04):
    """The reference's inverse-CDF truncated normal over every non-layer-norm parameter."""
    with torch.no_grad():
        l = (1. + math.erf(((lower - mean) / std) / math.sqrt(2.))) / 2.
        u = (1. + math.erf(((upper - mean) / std) / math.sqrt(2.))) / 2.
        for n, p in params:
            if 'layer_norm' not in n:
                p.uniform_(2 * l - 1, 2 * u - 1)
                p.erfinv_()
                p.mul_(std * math.sqrt(2.))
                p.add_(mean)


class SASRec(nn.Module):
    def __init__(self, n_items, hidden, heads, blocks, max_len, dropout, attn_dropout):
        super().__init__()
        self.embedding = SASEmbedding(n_items, hidden, max_len, dropout)
        self.model = SASModel(hidden, heads, blocks, dropout, attn_dropout)
        truncated_normal_(self.model.named_parameters())

    def forward(self, x):
        x, mask = self.embedding(x)
        return self.model(x, self.embedding.token.weight, mask)

    def loss(self, tokens, labels):
        """Cross-entropy over all items at the rows whose input and label are items
        (the reference's trainer keeps rows with seqs > 0)."""
        logits = self(tokens)
        keep = (tokens > 0) & (labels > 0)
        return F.cross_entropy(logits[keep], labels[keep])

    def scores_last(self, tokens):
        return self(tokens)[:, -1, :]


# BERT4Rec (model/bert.py): bidirectional blocks with output projections and
# post-norm sublayers, a GELU (tanh form) head, scores against the item
# embeddings plus a bias; the token table has n_items + 2 rows (n_items + 1 is
# the mask token).

class GELU(nn.Module):
    def forward(self, x):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


class MultiHeadedAttention(nn.Module):
    def __init__(self, h, d_model, dropout):
        super().__init__()
        self.h = h
        self.head_size = d_model // h
        self.linear_layers = nn.ModuleList([nn.Linear(d_model, d_model) for _ in range(3)])
        self.dropout = nn.Dropout(p=dropout)
        self.output_linear = nn.Linear(d_model, d_model)

    def forward(self, query, key, value, mask):
        B = query.size(0)
        q, k, v = [l(x).view(B, -1, self.h, self.head_size).transpose(1, 2)
                   for l, x in zip(self.linear_layers, (query, key, value))]
        x = attention(q, k, v, mask, self.dropout, causal=False)
        x = x.transpose(1, 2).contiguous().view(B, -1, self.h * self.head_size)
        return self.output_linear(x)


class PositionwiseFeedForward(nn.Module):
    def __init__(self, d_model, d_ff):
        super().__init__()
        self.w_1 = nn.Linear(d_model, d_ff)
        self.w_2 = nn.Linear(d_ff, d_model)
        self.activation = GELU()

    def forward(self, x):
        return self.w_2(self.activation(self.w_1(x)))


class SublayerConnection(nn.Module):
    def __init__(self, size, dropout):
        super().__init__()
        self.layer_norm = LayerNorm(size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, sublayer):
        return self.layer_norm(x + self.dropout(sublayer(x)))


class TransformerBlock(nn.Module):
    def __init__(self, hidden, heads, dropout, attn_dropout):
        super().__init__()
        self.attention = MultiHeadedAttention(heads, hidden, attn_dropout)
        self.feed_forward = PositionwiseFeedForward(hidden, 4 * hidden)
        self.input_sublayer = SublayerConnection(hidden, dropout)
        self.output_sublayer = SublayerConnection(hidden, dropout)

    def forward(self, x, mask):
        x = self.input_sublayer(x, lambda _x: self.attention(_x, _x, _x, mask))
        return self.output_sublayer(x, self.feed_forward)


class BERTEmbedding(nn.Module):
    def __init__(self, n_items, hidden, max_len, dropout):
        super().__init__()
        self.token = TokenEmbedding(n_items + 2, hidden)
        self.position = PositionalEmbedding(max_len, hidden)
        self.layer_norm = LayerNorm(hidden)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x):
        mask = (x > 0).unsqueeze(1).repeat(1, x.size(1), 1).unsqueeze(1)
        return self.dropout(self.layer_norm(self.token(x) + self.position(x))), mask


class BERTModel(nn.Module):
    def __init__(self, n_items, hidden, heads, blocks, dropout, attn_dropout):
        super().__init__()
        self.transformer_blocks = nn.ModuleList(
            [TransformerBlock(hidden, heads, dropout, attn_dropout) for _ in range(blocks)])
        self.linear = nn.Linear(hidden, hidden)
        self.bias = torch.nn.Parameter(torch.zeros(n_items + 2))
        self.activation = GELU()

    def forward(self, x, embedding_weight, mask):
        for block in self.transformer_blocks:
            x = block(x, mask)
        x = self.activation(self.linear(x))
        return torch.matmul(x, embedding_weight.permute(1, 0)) + self.bias


class BERT4Rec(nn.Module):
    def __init__(self, n_items, hidden, heads, blocks, max_len, dropout, attn_dropout):
        super().__init__()
        self.n_items = n_items
        self.max_len = max_len
        self.embedding = BERTEmbedding(n_items, hidden, max_len, dropout)
        self.model = BERTModel(n_items, hidden, heads, blocks, dropout, attn_dropout)
        truncated_normal_(self.model.named_parameters())

    def forward(self, x):
        x, mask = self.embedding(x)
        return self.model(x, self.embedding.token.weight, mask)

    def loss(self, tokens, labels):
        """The cloze objective on an already masked batch: cross-entropy at the
        rows whose label is an item (the masked rows), ignore_index 0."""
        logits = self(tokens)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), labels.view(-1), ignore_index=0)

    def scores_last(self, tokens):
        """The history with the mask token appended (the oldest item dropped when
        the window is full); scores over items 0..n_items at the mask."""
        mask = torch.full((tokens.size(0), 1), self.n_items + 1, dtype=tokens.dtype)
        x = torch.cat([tokens, mask], 1)[:, -self.max_len:]
        return self(x)[:, -1, :self.n_items + 1]


# STOSA (zfan20/STOSA: seqmodels.py DistSAModel, modules.py DistSAEncoder /
# DistLayer / DistSelfAttention / DistIntermediate, trainers.py bpr_optimization).
# Items are diagonal Gaussians: a mean and a covariance embedding (ELU + 1).
# Kept as that code runs, including its encoder's typo: DistSAEncoder assigns
# each layer's mean output to `maen_hidden_states`, so every layer sees the
# embedding's mean and the model's mean output IS the embedding's mean; only the
# covariance stream goes through the layers (the mean queries and keys still
# shape the attention). The published STOSA figures come from that code.

class TFLayerNorm(nn.Module):
    """modules.LayerNorm: biased variance, eps inside the root (torch.nn.LayerNorm's)."""

    def __init__(self, hidden_size, eps=1e-12):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.bias = nn.Parameter(torch.zeros(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x):
        u = x.mean(-1, keepdim=True)
        s = (x - u).pow(2).mean(-1, keepdim=True)
        return self.weight * ((x - u) / torch.sqrt(s + self.variance_epsilon)) + self.bias


def wasserstein_distance(mean1, cov1, mean2, cov2):
    ret = torch.sum((mean1 - mean2) * (mean1 - mean2), -1)
    c1, c2 = torch.sqrt(torch.clamp(cov1, min=1e-24)), torch.sqrt(torch.clamp(cov2, min=1e-24))
    return ret + torch.sum((c1 - c2) * (c1 - c2), -1)


def wasserstein_distance_matmul(mean1, cov1, mean2, cov2):
    mean1_2 = torch.sum(mean1 ** 2, -1, keepdim=True)
    mean2_2 = torch.sum(mean2 ** 2, -1, keepdim=True)
    ret = -2 * torch.matmul(mean1, mean2.transpose(-1, -2)) + mean1_2 + mean2_2.transpose(-1, -2)
    cov1_2 = torch.sum(cov1, -1, keepdim=True)
    cov2_2 = torch.sum(cov2, -1, keepdim=True)
    cov_ret = -2 * torch.matmul(torch.sqrt(torch.clamp(cov1, min=1e-24)),
                                torch.sqrt(torch.clamp(cov2, min=1e-24)).transpose(-1, -2)) + cov1_2 + cov2_2.transpose(-1, -2)
    return ret + cov_ret


class DistSelfAttention(nn.Module):
    def __init__(self, hidden, heads, dropout, attn_dropout):
        super().__init__()
        self.h, self.hd = heads, hidden // heads
        self.mean_query = nn.Linear(hidden, hidden)
        self.cov_query = nn.Linear(hidden, hidden)
        self.mean_key = nn.Linear(hidden, hidden)
        self.cov_key = nn.Linear(hidden, hidden)
        self.mean_value = nn.Linear(hidden, hidden)
        self.cov_value = nn.Linear(hidden, hidden)
        self.activation = nn.ELU()
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.mean_dense = nn.Linear(hidden, hidden)
        self.cov_dense = nn.Linear(hidden, hidden)
        self.out_dropout = nn.Dropout(dropout)
        self.LayerNorm = TFLayerNorm(hidden)

    def heads(self, x):
        return x.view(x.size()[:-1] + (self.h, self.hd)).permute(0, 2, 1, 3)

    def forward(self, mean_in, cov_in, attention_mask):
        mq, mk, mv = self.heads(self.mean_query(mean_in)), self.heads(self.mean_key(mean_in)), \
            self.heads(self.mean_value(mean_in))
        cq = self.heads(self.activation(self.cov_query(cov_in)) + 1)
        ck = self.heads(self.activation(self.cov_key(cov_in)) + 1)
        cv = self.heads(self.activation(self.cov_value(cov_in)) + 1)
        scores = -wasserstein_distance_matmul(mq, cq, mk, ck) / math.sqrt(self.hd) + attention_mask
        probs = self.attn_dropout(F.softmax(scores, dim=-1))
        mean_ctx = torch.matmul(probs, mv).permute(0, 2, 1, 3).contiguous()
        cov_ctx = torch.matmul(probs ** 2, cv).permute(0, 2, 1, 3).contiguous()
        mean_ctx = mean_ctx.view(mean_ctx.size()[:-2] + (self.h * self.hd,))
        cov_ctx = cov_ctx.view(cov_ctx.size()[:-2] + (self.h * self.hd,))
        mean_out = self.LayerNorm(self.out_dropout(self.mean_dense(mean_ctx)) + mean_in)
        cov_out = self.LayerNorm(self.out_dropout(self.cov_dense(cov_ctx)) + cov_in)
        return mean_out, cov_out, probs


class DistIntermediate(nn.Module):
    def __init__(self, hidden, dropout):
        super().__init__()
        self.dense_1 = nn.Linear(hidden, hidden * 4)
        self.intermediate_act_fn = nn.ELU()
        self.dense_2 = nn.Linear(hidden * 4, hidden)
        self.LayerNorm = TFLayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        h = self.dense_2(self.intermediate_act_fn(self.dense_1(x)))
        return self.LayerNorm(self.dropout(h) + x)


class DistLayer(nn.Module):
    def __init__(self, hidden, heads, dropout, attn_dropout):
        super().__init__()
        self.attention = DistSelfAttention(hidden, heads, dropout, attn_dropout)
        self.mean_intermediate = DistIntermediate(hidden, dropout)
        self.cov_intermediate = DistIntermediate(hidden, dropout)
        self.activation_func = nn.ELU()

    def forward(self, mean_h, cov_h, attention_mask):
        mean_a, cov_a, probs = self.attention(mean_h, cov_h, attention_mask)
        return self.mean_intermediate(mean_a), self.activation_func(self.cov_intermediate(cov_a)) + 1, probs


class DistSAEncoder(nn.Module):
    def __init__(self, hidden, heads, blocks, dropout, attn_dropout):
        super().__init__()
        self.layer = nn.ModuleList([DistLayer(hidden, heads, dropout, attn_dropout) for _ in range(blocks)])

    def forward(self, mean_h, cov_h, attention_mask):
        for layer in self.layer:
            maen_hidden_states, cov_h, _ = layer(mean_h, cov_h, attention_mask)  # sic: the reference's typo
        return mean_h, cov_h


class STOSA(nn.Module):
    """DistSAModel. item_size = n_items + 2 as in that code (ids 1..n_items and one more)."""

    def __init__(self, n_items, n_users, hidden, heads, blocks, max_len, dropout, attn_dropout, pvn_weight):
        super().__init__()
        self.n_items, self.max_len, self.pvn_weight = n_items, max_len, pvn_weight
        self.item_mean_embeddings = nn.Embedding(n_items + 2, hidden, padding_idx=0)
        self.item_cov_embeddings = nn.Embedding(n_items + 2, hidden, padding_idx=0)
        self.position_mean_embeddings = nn.Embedding(max_len, hidden)
        self.position_cov_embeddings = nn.Embedding(max_len, hidden)
        self.user_margins = nn.Embedding(n_users, 1)
        self.item_encoder = DistSAEncoder(hidden, heads, blocks, dropout, attn_dropout)
        self.LayerNorm = TFLayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)
        self.apply(self.init_weights)

    @staticmethod
    def init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.01, std=0.02)
        elif isinstance(module, TFLayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    def encode(self, x):
        L = x.size(1)
        pos = torch.arange(L).unsqueeze(0).expand_as(x)
        elu = nn.ELU()
        mean = elu(self.dropout(self.LayerNorm(self.item_mean_embeddings(x) + self.position_mean_embeddings(pos))))
        cov = elu(self.dropout(self.LayerNorm(self.item_cov_embeddings(x) + self.position_cov_embeddings(pos)))) + 1
        keep = (x > 0).long().unsqueeze(1).unsqueeze(2)
        causal = (torch.triu(torch.ones((1, L, L)), diagonal=1) == 0).unsqueeze(1).long()
        mask = (1.0 - (keep * causal).to(mean.dtype)) * (-2 ** 32 + 1)
        return self.item_encoder(mean, cov, mask)

    def item_gaussians(self, ids):
        return self.item_mean_embeddings(ids), nn.ELU()(self.item_cov_embeddings(ids)) + 1

    def loss(self, tokens, labels, negs):
        """BPR on Wasserstein distances plus pvn_weight x the positive-vs-negative
        regulariser, at the rows whose input and label are items."""
        mean, cov = self.encode(tokens)
        keep = (tokens > 0) & (labels > 0)
        sm, sc = mean[keep], cov[keep]
        pm, pc = self.item_gaussians(labels[keep])
        nm, nc = self.item_gaussians(negs[keep])
        pos = wasserstein_distance(sm, sc, pm, pc)
        neg = wasserstein_distance(sm, sc, nm, nc)
        pvn = wasserstein_distance(pm, pc, nm, nc)
        bpr = torch.mean(-torch.log(torch.sigmoid(neg - pos + 1e-24)))
        return bpr + self.pvn_weight * torch.mean(torch.clamp(pos - pvn, 0))

    def scores_last(self, tokens):
        mean, cov = self.encode(tokens)
        im = self.item_mean_embeddings.weight[:self.n_items + 1]
        ic = nn.ELU()(self.item_cov_embeddings.weight[:self.n_items + 1]) + 1
        return -wasserstein_distance_matmul(mean[:, -1, :], cov[:, -1, :], im, ic)


# --------------------------------------------------------------------------- files

ST_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.int32: "I32", torch.int64: "I64"}


def write_safetensors(path, tensors, metadata=None):
    """tensors: name -> torch tensor (contiguous CPU)."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        data = t.numpy().tobytes()
        header[name] = {"dtype": ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the tiny baselines

# Four windows of max_len 8 over 30 items: one shorter than max_len starting at
# the sequence's start (a padding input row whose label is the first item), one
# full, one of 6 rows starting at the start, one of 3 rows with an unlabelled row.
TINY_SEQS = [
    ([0, 5, 7, 9], [5, 7, 9, 11]),
    ([3, 14, 15, 9, 26, 5, 30, 1], [14, 15, 9, 26, 5, 30, 1, 2]),
    ([0, 21, 22, 23, 4, 8], [21, 22, 23, 4, 8, 17]),
    ([12, 13, 28], [13, 0, 29]),
]
# BERT4Rec's batch is already masked (train = 0 on the C side takes it
# literally; the keyed masking is tested there on its own): 31 is the mask
# token; rows masked to the mask token, one replaced by a random item (row 3 of
# the second window: 9 -> 17), one left as it is (row 0 of the third); labels
# only at masked rows; a window of the full max_len, shorter ones left-padded.
TINY_BERT_SEQS = [
    ([5, 31, 9, 31], [0, 7, 0, 11]),
    ([3, 14, 31, 17, 26, 5, 30, 31], [0, 0, 15, 9, 0, 0, 0, 2]),
    ([21, 22, 31, 4, 8, 31], [21, 0, 23, 0, 0, 17]),
    ([12, 31, 28], [0, 13, 0]),
]
TINY = dict(n_items=30, hidden=16, heads=2, blocks=2, max_len=8)


def padded(seqs, max_len):
    tok = torch.zeros(len(seqs), max_len, dtype=torch.int64)
    lab = torch.zeros(len(seqs), max_len, dtype=torch.int64)
    for s, (t, l) in enumerate(seqs):
        tok[s, max_len - len(t):] = torch.tensor(t)
        lab[s, max_len - len(l):] = torch.tensor(l)
    return tok, lab


def packed(seqs):
    tokens = [x for t, _ in seqs for x in t]
    labels = [x for _, l in seqs for x in l]
    start = [0]
    for t, _ in seqs:
        start.append(start[-1] + len(t))
    return {"batch.tokens": torch.tensor(tokens, dtype=torch.int32),
            "batch.labels": torch.tensor(labels, dtype=torch.int32),
            "batch.seq_start": torch.tensor(start, dtype=torch.int32)}


# The C side's keyed hash (src/retriever/attn_common.{h,c}), so the reference
# uses the very negatives STOSA draws in C for a key.
M64 = (1 << 64) - 1


def mix64(z):
    z = (z + 0x9e3779b97f4a7c15) & M64
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M64
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M64
    return z ^ (z >> 31)


def row_key(key, site, example, pos):
    k = mix64(key ^ mix64((site + 0x51ed270b27a1f5c3) & M64))
    k = mix64(k ^ ((example * 0xd6e8feb86659fd93) & M64))
    return mix64((k + (pos + 1) * 0x9e3779b97f4a7c15) & M64)


def uniform(rk, col):
    return (mix64((rk + col * 0x632be59bd9b4e019) & M64) >> 11) * (1.0 / 9007199254740992.0)


def stosa_negative(n_items, pos, key, example, position):
    q = 1 + int(uniform(row_key(key, 1, example, position), 0) * (n_items - 1))
    q = min(q, n_items - 1)
    return q + 1 if q >= pos else q


STOSA_KEY = 99  # the key tests/test_baselines_attn.c passes for STOSA


def stosa_negatives(seqs, n_items, max_len):
    negs = []
    for s, (t, l) in enumerate(seqs):
        r = len(t)
        negs.append([stosa_negative(n_items, l[j], STOSA_KEY, s, max_len - r + j) if t[j] > 0 and l[j] > 0 else 0
                     for j in range(r)])
    return negs


def perturb_layer_norms(model, gen):
    """Layer norms start at ones and zeros; move them so the test sees their weights used."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if 'layer_norm' in n or 'LayerNorm' in n:
                p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def make_baseline(arch, out_dir):
    torch.manual_seed(15)
    gen = torch.Generator().manual_seed(150)
    c = TINY
    seqs = TINY_SEQS
    if arch == "sasrec":
        model = SASRec(c["n_items"], c["hidden"], c["heads"], c["blocks"], c["max_len"], 0.0, 0.0)
    elif arch == "bert4rec":
        model = BERT4Rec(c["n_items"], c["hidden"], c["heads"], c["blocks"], c["max_len"], 0.0, 0.0)
        seqs = TINY_BERT_SEQS
    elif arch == "stosa":
        model = STOSA(c["n_items"], 5, c["hidden"], c["heads"], c["blocks"], c["max_len"], 0.0, 0.0, 0.5)
    else:
        raise SystemExit("unknown arch " + arch)
    perturb_layer_norms(model, gen)
    model = model.double()
    tok, lab = padded(seqs, c["max_len"])
    model.zero_grad()
    if arch == "stosa":
        negs = stosa_negatives(seqs, c["n_items"], c["max_len"])
        neg = torch.zeros_like(tok)
        for s_, n_ in enumerate(negs):
            neg[s_, c["max_len"] - len(n_):] = torch.tensor(n_)
        loss = model.loss(tok, lab, neg)
    else:
        loss = model.loss(tok, lab)
    loss.backward()
    with torch.no_grad():
        scores = model.scores_last(tok)
    files = packed(seqs)
    if arch == "stosa":
        files["batch.negs"] = torch.tensor([x for n_ in negs for x in n_], dtype=torch.int32)
    for n, p in model.state_dict().items():
        files[n] = p.float()
    for n, p in model.named_parameters():
        # tensors the loss never reaches (STOSA's mean stream after the embedding,
        # its user margins) have no .grad: their gradient is zero
        files["grad." + n] = (p.grad if p.grad is not None else torch.zeros_like(p)).float()
    files["out.scores"] = scores.float()
    files["out.loss"] = loss.detach().reshape(1)
    meta = {k: str(v) for k, v in c.items()}
    meta["arch"] = arch
    path = os.path.join(out_dir, arch + ".safetensors")
    write_safetensors(path, files, meta)
    print(f"{path}: loss {loss.item():.9f}, {len(files)} tensors, {os.path.getsize(path)} bytes")


# --------------------------------------------------------------------------- training (quality reference)

def read_sequences(path):
    seqs = {}
    with open(path, encoding="utf-8") as f:
        head = f.readline().rstrip("\n").split("\t")
        if head[:1] != ["user_id"] or "items" not in head:
            raise SystemExit("%s: expected a header with user_id and items" % path)
        col = head.index("items")
        for line in f:
            cells = line.rstrip("\n").split("\t")
            seqs[int(cells[0])] = [int(x) for x in cells[col].split()]
    return seqs


def build_model(arch, n_items, n_users, hidden, heads, blocks, max_len, dropout, attn_dropout, pvn_weight):
    if arch == "sasrec":
        return SASRec(n_items, hidden, heads, blocks, max_len, dropout, attn_dropout)
    if arch == "bert4rec":
        return BERT4Rec(n_items, hidden, heads, blocks, max_len, dropout, attn_dropout)
    if arch == "stosa":
        return STOSA(n_items, n_users, hidden, heads, blocks, max_len, dropout, attn_dropout, pvn_weight)
    raise SystemExit("unknown arch " + arch)


def evaluate(model, seqs, split, max_len):
    """Per-user Recall / NDCG / MRR at 1, 5, 10, 20, 50 from the scores at the last
    row, the padding item and the whole history masked; the rank is the number of
    items scoring higher plus the equal-scored items with lower ids."""
    model.eval()
    users = sorted(seqs)
    ranks = []
    cut = 2 if split == "val" else 1
    with torch.no_grad():
        for b in range(0, len(users), 64):
            chunk = users[b:b + 64]
            hists = [seqs[u][:-cut] for u in chunk]
            targets = [seqs[u][-cut] for u in chunk]
            x = torch.LongTensor([[0] * (max_len - len(h[-max_len:])) + h[-max_len:] for h in hists])
            out = model.scores_last(x)
            for h, sc, t in zip(hists, out, targets):
                sc[0] = -float("inf")
                sc[torch.LongTensor(h)] = -float("inf")
                ranks.append(int((sc > sc[t]).sum()) + int((sc[:t] == sc[t]).sum()))
    model.train()
    ranks = torch.tensor(ranks, dtype=torch.float64)
    m = {}
    for k in (1, 5, 10, 20, 50):
        hit = (ranks < k).double()
        m["Recall@%d" % k] = float(hit.mean())
        m["NDCG@%d" % k] = float((hit / torch.log2(ranks + 2)).mean())
        m["MRR@%d" % k] = float((hit / (ranks + 1)).mean())
    return m


class ClozeWindows(torch.utils.data.Dataset):
    """BERT4Rec's training windows, masked afresh at every access as the
    reference's BERTTrainDataset does."""

    def __init__(self, windows, max_len, mask_prob, max_predictions, n_items, rng):
        self.windows, self.max_len, self.mask_prob = windows, max_len, mask_prob
        self.max_predictions = max_predictions or max_len
        self.n_items, self.rng = n_items, rng

    def __len__(self):
        return len(self.windows)

    def __getitem__(self, index):
        seq = self.windows[index]
        tokens, labels, covered = [], [], set()
        for i, s in enumerate(seq):
            if len(covered) >= self.max_predictions or s in covered:
                tokens.append(s)
                labels.append(0)
                continue
            p = self.mask_prob
            if i == len(seq) - 1:
                p += 0.1 * (1 - self.mask_prob)
            u = self.rng.random()
            if u < p:
                covered.add(s)
                u /= p
                if u < 0.8:
                    tokens.append(self.n_items + 1)
                elif u < 0.9:
                    tokens.append(self.rng.randint(1, self.n_items))
                else:
                    tokens.append(s)
                labels.append(s)
            else:
                tokens.append(s)
                labels.append(0)
        tokens, labels = tokens[-self.max_len:], labels[-self.max_len:]
        pad = self.max_len - len(tokens)
        return torch.LongTensor([0] * pad + tokens), torch.LongTensor([0] * pad + labels)


def train_step(arch, model, opt, x, y, n_items):
    """One optimiser step on a batch; returns the loss."""
    opt.zero_grad()
    if arch == "stosa":
        # a negative per labelled row, uniform over the items other than the label
        # (as our C STOSA draws them)
        q = torch.randint(1, n_items, y.shape)
        loss = model.loss(x, y, q + (q >= y).long())
    else:
        loss = model.loss(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    opt.step()
    return loss.item()


def time_epoch(a, model, opt, loader, n_items):
    """One training epoch (or its first --max-batches batches), timed, as one JSON
    line for bench/bench_retrievers."""
    model.train()
    t0, c0 = time.time(), time.process_time()
    total, n = 0.0, 0
    for x, y in loader:
        total += train_step(a.arch, model, opt, x, y, n_items)
        n += 1
        if a.max_batches and n >= a.max_batches:
            break
    dt, dc = time.time() - t0, time.process_time() - c0
    print(json.dumps({"arch": a.arch, "seconds": dt, "cpu_seconds": dc, "batches": n, "windows": len(loader.dataset),
                      "loss": total / max(n, 1), "threads": a.threads}))


def train(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    seqs = read_sequences(os.path.join(a.dataset, "sequences.tsv"))
    with open(os.path.join(a.dataset, "meta.json"), encoding="utf-8") as f:
        movielens = json.load(f).get("format") == "movielens"
    L = a.max_len or (200 if movielens else 50)
    batch = a.batch or (16 if movielens else 64)
    n_items = max(max(s) for s in seqs.values())
    # LlamaRec's training windows (step = max length): the training part of each
    # user (all but the last two items); one window when shorter than 2L, else
    # non-overlapping windows counted from the end
    windows = []
    for u in sorted(seqs):
        s = seqs[u][:-2]
        if len(s) < 2 * L:
            windows.append(s)
        else:
            windows += [s[i:i + L] for i in range(len(s) - L, -1, -L)]
    if a.arch == "bert4rec":
        data = ClozeWindows(windows, L, a.mask_prob, a.max_predictions, n_items, random.Random(a.seed))
    else:
        tokens = torch.LongTensor([[0] * (L - len(w[:-1][-L:])) + w[:-1][-L:] for w in windows])
        labels = torch.LongTensor([[0] * (L - len(w[-L:])) + w[-L:] for w in windows])
        data = torch.utils.data.TensorDataset(tokens, labels)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True)
    model = build_model(a.arch, n_items, max(seqs) + 1, a.hidden, a.heads, a.blocks, L, a.dropout, a.attn_dropout,
                        a.pvn_weight)
    if a.arch == "sasrec":
        # as src/retriever/sasrec.c starts it: the embeddings at the truncated normal of
        # the other weights (N(0, 1) under the tied cross-entropy decoder starts 3-5x
        # above a uniform guess); the padding row stays zero
        truncated_normal_(model.embedding.named_parameters())
        with torch.no_grad():
            model.embedding.token.weight[0].zero_()
    named = list(model.named_parameters())
    no_decay = ("bias", "layer_norm")
    opt = torch.optim.AdamW([
        {"params": [p for n, p in named if not any(x in n for x in no_decay)], "weight_decay": a.weight_decay},
        {"params": [p for n, p in named if any(x in n for x in no_decay)], "weight_decay": 0.0}],
        lr=a.lr, eps=1e-9)
    if a.cmd == "time":
        return time_epoch(a, model, opt, loader, n_items)
    cloze_rng = [data.rng] if a.arch == "bert4rec" else []

    def one_epoch(done):
        model.train()
        total, n = 0.0, 0
        for x, y in loader:
            total += train_step(a.arch, model, opt, x, y, n_items)
            n += 1
            if a.max_iters and done + n >= a.max_iters:
                break
        return total / n, n

    def validate():
        return evaluate(model, seqs, "val", L), evaluate(model, seqs, "test", L)

    torch_schedule.train_with_early_stopping(a.out, model, opt, one_epoch, validate, {"arch": a.arch, "seed": a.seed},
                                             a.epochs, a.patience, a.resume, cloze_rng, a.max_iters)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("baselines", help="write the tiny reference files")
    b.add_argument("--out", default="tests/data/baselines")
    b.add_argument("--arch", action="append", help="default: all")
    for name in ("train", "time"):
        t = sub.add_parser(name, help="train a model with LlamaRec's recipe, logging every epoch" if name == "train"
                           else "time one training epoch (JSON line)")
        add_train_flags(t, name)
    a = ap.parse_args()
    if a.cmd in ("train", "time"):
        train(a)
    elif a.cmd == "baselines":
        os.makedirs(a.out, exist_ok=True)
        torch.set_default_dtype(torch.float32)
        for arch in a.arch or ["sasrec", "bert4rec", "stosa"]:
            make_baseline(arch, a.out)


def add_train_flags(t, name):
    t.add_argument("--dataset", required=True, help="a prepared dataset (build/mllm4rec prepare)")
    t.add_argument("--arch", default="sasrec", choices=["sasrec", "bert4rec", "stosa"])
    if name == "train":
        t.add_argument("--out", required=True, help="JSON-lines log to write (its checkpoint: OUT.ckpt)")
        t.add_argument("--resume", action="store_true", help="continue from OUT.ckpt when it exists")
    else:
        t.add_argument("--max-batches", type=int, default=0, help="time only the first N batches (0: all)")
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--epochs", type=int, default=500)
    t.add_argument("--patience", type=int, default=20, help="epochs without a better val Recall@10 (0: never stop)")
    t.add_argument("--max-iters", type=int, default=0, help="stop after this many iterations (0: no limit)")
    t.add_argument("--max-len", type=int, default=0, help="default 200 (MovieLens) or 50")
    t.add_argument("--batch", type=int, default=0, help="default 16 (MovieLens) or 64")
    t.add_argument("--hidden", type=int, default=64)
    t.add_argument("--heads", type=int, default=2)
    t.add_argument("--blocks", type=int, default=2)
    t.add_argument("--dropout", type=float, default=0.2)
    t.add_argument("--attn-dropout", type=float, default=0.2)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--mask-prob", type=float, default=0.2, help="BERT4Rec's cloze probability")
    t.add_argument("--max-predictions", type=int, default=40, help="BERT4Rec: most masked rows per window")
    t.add_argument("--pvn-weight", type=float, default=0.1, help="STOSA's regulariser weight")
    t.add_argument("--weight-decay", type=float, default=0.01,
                   help="AdamW's, on all but biases and norms (ours for --arch stosa: 0)")
    t.add_argument("--threads", type=int, default=2)


if __name__ == "__main__":
    main()
