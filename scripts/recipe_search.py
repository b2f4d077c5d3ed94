#!/usr/bin/env python
"""The plain-PyTorch prototype of the tuned recipe that its settings were chosen with, on a validation split.

    python scripts/recipe_search.py --model cnn --shift 1 --data-dir ../shared/data/fashion-mnist --val 10000

It trains on the training set minus `--val` images (drawn with the seed, as `data.val_size` draws them) and
prints the validation accuracy after every epoch (and of the weight average with --ema), never touching the
test set. docs/recipe.md lists the runs behind each choice. Kept as it was run, so its numbers reproduce: it
differs from the package in small ways (its warm-up reaches the peak lr after w steps, the package's after
w + 1; `--bnpos after` is the package's BatchNorm placement).
"""

import argparse
import json
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from fashionmlp.data import TensorSplit, load_fashion_mnist

p = argparse.ArgumentParser()
p.add_argument("--model", default="cnn")
p.add_argument("--ch", default="16,32")
p.add_argument("--hidden", default="128")
p.add_argument("--bn", type=int, default=1)
p.add_argument("--epochs", type=int, default=20)
p.add_argument("--bs", type=int, default=128)
p.add_argument("--lr", type=float, default=0.1)
p.add_argument("--wd", type=float, default=5e-4)
p.add_argument("--ls", type=float, default=0.1)
p.add_argument("--shift", type=int, default=2)
p.add_argument("--flip", type=int, default=1)
p.add_argument("--ema", type=float, default=0.0)
p.add_argument("--warmup", type=float, default=0.2)
p.add_argument("--anneal", default="linear")
p.add_argument("--tta", type=int, default=1)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--val", type=int, default=5000)
p.add_argument("--time_only", type=int, default=0)
p.add_argument("--data-dir", default=os.environ.get("FASHIONMLP_DATA_DIR", "data"))
p.add_argument("--dropout", type=float, default=0.0)
p.add_argument("--bnpos", default="before")
p.add_argument("--cl", type=int, default=1)
a = p.parse_args()
torch.set_num_threads(2)
d = load_fashion_mnist(a.data_dir, val_size=a.val, seed=a.seed)
tr = TensorSplit.from_split(d.train, torch.device("cpu"))
va = TensorSplit.from_split(d.val if a.val else d.test, torch.device("cpu"))
torch.manual_seed(a.seed)
hidden = [int(h) for h in a.hidden.split(",") if h]


def cls(fan):
    L = []
    for w in hidden:
        L += [nn.Linear(fan, w, bias=not a.bn)] + ([nn.BatchNorm1d(w)] if a.bn else []) + [nn.ReLU()]
        if a.dropout:
            L.append(nn.Dropout(a.dropout))
        fan = w
    return L + [nn.Linear(fan, 10)]


if a.model == "cnn":
    c1, c2 = [int(c) for c in a.ch.split(",")]

    def blk(i, o):
        bn = [nn.BatchNorm2d(o)] if a.bn else []
        if a.bnpos == "after":
            return [nn.Conv2d(i, o, 3, padding=1, bias=not a.bn), nn.MaxPool2d(2)] + bn + [nn.ReLU()]
        return [nn.Conv2d(i, o, 3, padding=1, bias=not a.bn)] + bn + [nn.MaxPool2d(2), nn.ReLU()]

    model = nn.Sequential(*blk(1, c1), *blk(c1, c2), nn.Flatten(), *cls(c2 * 49)).to(
        memory_format=torch.channels_last if a.cl else torch.contiguous_format
    )
else:
    model = nn.Sequential(nn.Flatten(), *cls(784))
print("params", sum(p.numel() for p in model.parameters()))
decay = [p for p in model.parameters() if p.ndim > 1]
nodecay = [p for p in model.parameters() if p.ndim <= 1]
opt = torch.optim.SGD(
    [{"params": decay, "weight_decay": a.wd}, {"params": nodecay, "weight_decay": 0}],
    lr=a.lr,
    momentum=0.9,
    nesterov=True,
    fused=True,
)
ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(a.ema), use_buffers=True) if a.ema else None
g = torch.Generator().manual_seed(a.seed)
n = len(tr)
steps_per = math.ceil(n / a.bs)
total = steps_per * a.epochs
warm = int(a.warmup * total)


def lr_at(s):
    if s < warm:
        return a.lr * (s + 1) / warm
    t = (s - warm) / max(total - warm, 1)
    return a.lr * (1 - t) if a.anneal == "linear" else a.lr * 0.5 * (1 + math.cos(math.pi * t))


R = torch.arange(28)


def augment(x):
    B = len(x)
    s = a.shift
    if not s and not a.flip:
        return x
    xp = F.pad(x, (s, s, s, s)) if s else x
    off = torch.randint(0, 2 * s + 1, (B, 2), generator=g) if s else torch.zeros(B, 2, dtype=torch.long)
    cols = R.expand(B, 28)
    if a.flip:
        f = torch.randint(0, 2, (B, 1), generator=g).bool()
        cols = torch.where(f, 27 - cols, cols)
    rows = R[None] + off[:, :1]
    cols = cols + off[:, 1:]
    return xp[torch.arange(B)[:, None, None], 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1)


@torch.inference_mode()
def ev(m, split):
    m.eval()
    correct = 0
    for i in range(0, len(split), 2000):
        x = split.x[i : i + 2000]
        pr = F.softmax(m(x), 1)
        if a.tta:
            pr = pr + F.softmax(m(x.flip(3)), 1)
        correct += int((pr.argmax(1) == split.y[i : i + 2000]).sum())
    return correct / len(split)


step = 0
hist = []
ttime = 0
for ep in range(1, a.epochs + 1):
    model.train()
    t0 = time.perf_counter()
    order = torch.randperm(n, generator=g)
    for i in range(0, n, a.bs):
        idx = order[i : i + a.bs]
        x = augment(tr.x.index_select(0, idx))
        y = tr.y.index_select(0, idx)
        if a.model == "cnn" and a.cl:
            x = x.contiguous(memory_format=torch.channels_last)
        for gr in opt.param_groups:
            gr["lr"] = lr_at(step)
        loss = F.cross_entropy(model(x), y, label_smoothing=a.ls)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if ema is not None:
            ema.update_parameters(model)
    dt = time.perf_counter() - t0
    ttime += dt
    if a.time_only:
        print(f"epoch {ep} {dt:.2f}s")
        continue
    acc = ev(model, va)
    acce = ev(ema.module, va) if ema else None
    hist.append((ep, acc, acce))
    print(ep, f"{dt:.2f}s", acc, acce, flush=True)
print(
    "RESULT",
    json.dumps(
        {
            "args": vars(a),
            "final": hist[-1] if hist else None,
            "best": max(h[1] for h in hist) if hist else None,
            "s_per_epoch": ttime / a.epochs,
        }
    ),
)
