#!/usr/bin/env python3
"""PyTorch reference for `cargo xtask bench train`: one SCL training step (forward, backward,
optimiser update) of each scl-models network, built the same way, on the CPU.

Networks (scl-models' defaults):
- mlp: 784 -> 256 -> 128, batch norm after each linear layer, ReLU between and at the end
  (MNIST-shaped input, 1x28x28);
- cnn: scl-models' small CNN: two stages of 3x3 convolution (no bias, padding 1), batch norm,
  ReLU and 2x2 max-pool, 32 then 64 channels; global average pool; linear 64 -> 128; final
  ReLU (1x28x28);
- resnet18: ResNet-18 with the CIFAR stem (3x3 stride-1 first convolution, no max-pool),
  width 64, final ReLU, global average pool, 512-d (3x32x32);
- densenet: DenseNet-BC, stem 7x7 stride 2 + 3x3 max-pool, three blocks of 6 bottleneck layers
  (growth 12, bottleneck 4x), transitions halving the channels, final batch norm and ReLU,
  global average pool (3x32x32).

Every embedding is L2-normalised. Loss: SupCon (HobbitLong/SupContrast semantics, contrast
mode 'all'), tau = 0.1, base temperature 0.07, two views per image (the image and its
vertical flip, next to each other). SGD, learning rate 0.1, momentum 0.9, weight decay 5e-4.
Eager mode, f32, `torch.set_num_threads(--threads)`.

Per network, in a fresh child process: `--warmup` untimed steps, then `--steps` timed ones
(median seconds of forward, backward and optimiser step, and of the whole step); images/s
counts both views. Memory: growth of the peak resident set size from before the model was
built to the end of the steps. A profile of one step by operator kind from torch.profiler
(self CPU time).

Usage: python3 train_step_torch.py --out torch-train.json [--networks mlp,cnn,resnet18,densenet]
       [--batch mlp=256,cnn=64,resnet18=64,densenet=64] [--steps 3] [--warmup 1] [--threads N]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

NETWORKS = ["mlp", "cnn", "resnet18", "densenet"]
SHAPES = {"mlp": (1, 28, 28), "cnn": (1, 28, 28), "resnet18": (3, 32, 32), "densenet": (3, 32, 32)}


def build(torch, name):
    nn = torch.nn

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.b1 = nn.Linear(784, 256), nn.BatchNorm1d(256)
            self.l2, self.b2 = nn.Linear(256, 128), nn.BatchNorm1d(128)

        def forward(self, x):
            h = torch.relu(self.b1(self.l1(x.flatten(1))))
            return torch.relu(self.b2(self.l2(h)))

    class SmallCnn(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.n1 = nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
            self.c2, self.n2 = nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64)
            self.head = nn.Linear(64, 128)

        def forward(self, x):
            h = nn.functional.max_pool2d(torch.relu(self.n1(self.c1(x))), 2)
            h = nn.functional.max_pool2d(torch.relu(self.n2(self.c2(h))), 2)
            return torch.relu(self.head(h.mean((2, 3))))

    class Block(nn.Module):
        def __init__(self, i, o, stride):
            super().__init__()
            self.c1 = nn.Conv2d(i, o, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(o)
            self.c2 = nn.Conv2d(o, o, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(o)
            self.down = None
            if stride != 1 or i != o:
                self.down = nn.Sequential(nn.Conv2d(i, o, 1, stride, bias=False), nn.BatchNorm2d(o))

        def forward(self, x):
            s = x if self.down is None else self.down(x)
            return torch.relu(self.b2(self.c2(torch.relu(self.b1(self.c1(x))))) + s)

    class ResNet18(nn.Module):
        def __init__(self, w=64):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w)
            blocks, i = [], w
            for stage, o in enumerate([w, 2 * w, 4 * w, 8 * w]):
                blocks += [Block(i, o, 1 if stage == 0 else 2), Block(o, o, 1)]
                i = o
            self.blocks = nn.Sequential(*blocks)

        def forward(self, x):
            return self.blocks(torch.relu(self.b1(self.c1(x)))).mean((2, 3))

    class DenseLayer(nn.Module):
        def __init__(self, c, growth, bn_size):
            super().__init__()
            mid = bn_size * growth
            self.n1, self.c1 = nn.BatchNorm2d(c), nn.Conv2d(c, mid, 1, bias=False)
            self.n2, self.c2 = nn.BatchNorm2d(mid), nn.Conv2d(mid, growth, 3, padding=1, bias=False)

        def forward(self, h):
            y = self.c2(torch.relu(self.n2(self.c1(torch.relu(self.n1(h))))))
            return torch.cat([h, y], 1)

    class DenseNet(nn.Module):
        def __init__(self, growth=12, blocks=(6, 6, 6), initial=64, bn_size=4):
            super().__init__()
            self.stem = nn.Conv2d(3, initial, 7, 2, 3, bias=False)
            self.stem_norm = nn.BatchNorm2d(initial)
            layers, c = [], initial
            for i, n in enumerate(blocks):
                for _ in range(n):
                    layers.append(DenseLayer(c, growth, bn_size))
                    c += growth
                if i + 1 < len(blocks):
                    layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False),
                               nn.AvgPool2d(2, 2)]
                    c //= 2
            self.body = nn.Sequential(*layers)
            self.norm5 = nn.BatchNorm2d(c)

        def forward(self, x):
            h = nn.functional.max_pool2d(torch.relu(self.stem_norm(self.stem(x))), 3, 2, 1)
            return torch.relu(self.norm5(self.body(h))).mean((2, 3))

    return {"mlp": Mlp, "cnn": SmallCnn, "resnet18": ResNet18, "densenet": DenseNet}[name]()


def supcon(torch, features, labels, temperature=0.1, base_temperature=0.07):
    """SupContrast's SupConLoss.forward, contrast mode 'all', [N, V, d] features."""
    n, views = features.shape[0], features.shape[1]
    labels = labels.view(-1, 1)
    mask = torch.eq(labels, labels.T).float()
    contrast = torch.cat(torch.unbind(features, dim=1), dim=0)
    logits = torch.matmul(contrast, contrast.T) / temperature
    logits = logits - logits.max(dim=1, keepdim=True)[0].detach()
    mask = mask.repeat(views, views)
    logits_mask = torch.ones_like(mask)
    logits_mask.fill_diagonal_(0)
    mask = mask * logits_mask
    log_prob = logits - torch.log((torch.exp(logits) * logits_mask).sum(1, keepdim=True))
    pos = mask.sum(1)
    pos = torch.where(pos < 1e-6, torch.ones_like(pos), pos)
    loss = -(temperature / base_temperature) * (mask * log_prob).sum(1) / pos
    return loss.mean()


KINDS = [
    ("convolution backward", ("convolution_backward",)),
    ("convolution forward", ("conv", "mkldnn_convolution")),
    ("batch norm", ("batch_norm",)),
    ("pooling", ("pool",)),
    ("matmul / linear", ("mm", "addmm", "linear", "matmul")),
    ("optimiser", ("optimizer", "_foreach", "add_", "mul_", "sgd")),
    ("elementwise / reduce", ("relu", "threshold", "add", "mul", "div", "sum", "mean", "exp",
                              "log", "cat", "flip", "max", "where", "sub")),
]


def kind_of(name):
    name = name.lower()
    for kind, keys in KINDS:
        if any(k in name for k in keys):
            return kind
    return "other"


def run_one(args, name):
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = args.batch[name]
    c, h, w = SHAPES[name]
    x = torch.randn(batch, c, h, w)
    y = torch.arange(batch) % 10
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model = build(torch, name).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

    def step():
        t0 = time.perf_counter()
        views = torch.stack([x, torch.flip(x, [2])], 1).reshape(2 * batch, c, h, w)
        z = torch.nn.functional.normalize(model(views), dim=1)
        loss = supcon(torch, z.view(batch, 2, -1), y)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2, t3 - t0, float(loss)

    for _ in range(args.warmup):
        step()
    times = [step() for _ in range(args.steps)]
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    med = [statistics.median(t[i] for t in times) for i in range(4)]
    profile = {}
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    for e in prof.key_averages():
        kind = kind_of(e.key)
        profile[kind] = profile.get(kind, 0.0) + e.self_cpu_time_total / 1e6
    return {
        "network": name, "batch": batch, "views": 2, "threads": args.threads,
        "forward_seconds": med[0], "backward_seconds": med[1], "optimizer_seconds": med[2],
        "step_seconds": med[3], "images_per_second": 2 * batch / med[3],
        "peak_memory_mib": max(0, rss_after - rss_before) / 1024.0,
        "loss": times[-1][4], "profile_seconds": profile,
        "torch": torch.__version__,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--networks", default=",".join(NETWORKS))
    p.add_argument("--batch", default="mlp=256,cnn=64,resnet18=64,densenet=64")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.batch = {k: int(v) for k, v in (kv.split("=") for kv in args.batch.split(","))}
    if args.child:
        json.dump(run_one(args, args.child), sys.stdout)
        return
    try:
        import torch
        version = torch.__version__
    except ImportError:
        with open(args.out, "w") as f:
            json.dump({"available": False, "reason": "PyTorch is not installed"}, f)
        print("PyTorch is not installed", file=sys.stderr)
        return
    rows = []
    for name in args.networks.split(","):
        if name not in NETWORKS:
            sys.exit(f"network {name} is not allowed: use {', '.join(NETWORKS)}")
        cmd = [sys.executable, __file__, "--out", "-", "--child", name,
               "--batch", ",".join(f"{k}={v}" for k, v in args.batch.items()),
               "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--threads", str(args.threads)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            rows.append({"network": name, "error": done.stderr.strip().splitlines()[-1:]})
            continue
        row = json.loads(done.stdout)
        rows.append(row)
        print(f"{name}: {row['images_per_second']:.1f} images/s "
              f"({row['step_seconds']:.3f} s per step)", file=sys.stderr)
    with open(args.out, "w") as f:
        json.dump({"available": True, "torch": version, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
