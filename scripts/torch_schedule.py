"""The early-stopping schedule the PyTorch references train with, and its checkpoint.

One validation per epoch; a strictly better validation Recall@10 replaces the best;
`patience` epochs without one end the run. Each epoch writes a JSON line to the log,
and the run ends with a "final" line holding the best epoch's metrics.

A full schedule of these references takes hours on one core, so after every epoch the
whole training state goes to LOG.ckpt (model, optimiser, torch's random state, the
extra random generators a caller names, the schedule's counters), written to a
temporary name and renamed, so a killed run leaves the previous epoch's checkpoint.
`resume=True` continues from it: the log is cut back to the checkpoint's epochs and
the run goes on as if it had never stopped (the same batches, masks and dropout).
"""
import json
import os
import time

import torch


def _cut_log(path, last_epoch):
    """The log's epoch lines up to last_epoch, as text (a final line is dropped)."""
    kept = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if not row.get("final") and row["epoch"] <= last_epoch:
                kept.append(line)
    return "".join(kept)


def _save(path, state):
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def train_with_early_stopping(out, model, opt, one_epoch, validate, fields, epochs, patience, resume=False,
                              rngs=(), max_iters=0):
    """one_epoch(iterations_so_far) -> (mean training loss, batches run);
    validate() -> (val metrics, test metrics), each a dict with "Recall@10", "NDCG@10", "MRR@10".
    fields: put in every line (architecture, seed). rngs: python random.Random objects the
    epochs draw from, checkpointed with torch's own generator. Returns the best line."""
    ckpt = out + ".ckpt"
    iteration, best, bad, first, spent = 0, None, 0, 1, 0.0
    text = ""
    if resume and os.path.exists(ckpt):
        # our own file: it holds python random states, not only tensors
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        torch.set_rng_state(state["torch_rng"])
        for r, s in zip(rngs, state["rngs"]):
            r.setstate(s)
        iteration, best, bad, spent = state["iteration"], state["best"], state["bad"], state["seconds"]
        first = state["epoch"] + 1
        text = _cut_log(out, state["epoch"])
        print("resuming after epoch %d (iteration %d) from %s" % (state["epoch"], iteration, ckpt), flush=True)
    t0 = time.time() - spent
    epoch = first - 1
    stopped = best is not None and patience and bad >= patience
    with open(out, "w", encoding="utf-8") as log:
        log.write(text)
        for epoch in range(first, epochs + 1):
            if stopped or (max_iters and iteration >= max_iters):
                epoch -= 1
                break
            loss, n = one_epoch(iteration)
            iteration += n
            val, test = validate()
            line = dict(fields, epoch=epoch, iter=iteration, train_loss=loss, val=val, test=test,
                        seconds=time.time() - t0)
            log.write(json.dumps(line) + "\n")
            log.flush()
            print("epoch %d: train loss %.4f, val Recall@10 %.4f, test Recall@10 %.4f (%.0f s)"
                  % (epoch, loss, val["Recall@10"], test["Recall@10"], time.time() - t0), flush=True)
            if best is None or val["Recall@10"] > best["val"]["Recall@10"]:
                best, bad = line, 0
            else:
                bad += 1
                stopped = bool(patience) and bad >= patience
            _save(ckpt, {"model": model.state_dict(), "opt": opt.state_dict(), "torch_rng": torch.get_rng_state(),
                         "rngs": [r.getstate() for r in rngs], "epoch": epoch, "iteration": iteration,
                         "best": best, "bad": bad, "seconds": time.time() - t0})
        if best is None:
            raise SystemExit("%s: no epoch ran (--epochs %d)" % (out, epochs))
        log.write(json.dumps(dict(fields, final=True, best_epoch=best["epoch"], epochs=epoch, val=best["val"],
                                  test=best["test"])) + "\n")
    print("best epoch %d of %d: val Recall@10 %.4f; test Recall@10 %.4f NDCG@10 %.4f MRR@10 %.4f"
          % (best["epoch"], epoch, best["val"]["Recall@10"], best["test"]["Recall@10"], best["test"]["NDCG@10"],
             best["test"]["MRR@10"]))
    return best
