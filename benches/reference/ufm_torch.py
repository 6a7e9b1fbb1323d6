"""UFM+ (unconstrained features with a ReLU) in PyTorch: the same cell as an scl-train UFM run,
for a side-by-side check of what the optimiser reaches.

Features h_i = normalize(relu(W_i)), W drawn |N(0, 1)| (the positive orthant), full-batch
SupCon at temperature tau (base temperature = tau, one view per sample), STEP imbalance (the
last floor(K/2) classes keep floor(n_majority / R) samples), Adam with a constant or cosine
learning rate. Prints one JSON line per run: the final OF distance, the loss minus the
closed-form loss at an orthogonal frame, and the pairs of classes whose means have cosine
above 0.5 (merged classes).

    python3 benches/reference/ufm_torch.py --classes 10 --ratios 10,100 --seeds 0,1,2 \
        --steps 2000 --schedule cosine

`--start-dir DIR` starts each run from the features and labels in `DIR/start-R<ratio>-s<seed>.npy`
and `DIR/labels-R<ratio>-s<seed>.npy` (`<ratio>` as given in `--ratios`) instead of drawing
them: `cargo xtask bench ufm` writes scl-train's starting points there, so that both programs
start each seed from the same point. `--out FILE` also writes every run's line into one JSON
list.
"""

import argparse
import json
import math
import os

import torch


def supcon(z, y, tau):
    n = z.shape[0]
    sim = z @ z.T / tau
    self_mask = torch.eye(n, dtype=torch.bool)
    sim = sim.masked_fill(self_mask, float("-inf"))
    logprob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (y[:, None] == y[None, :]) & ~self_mask
    per_anchor = -(logprob.masked_fill(~pos, 0.0).sum(1)) / pos.sum(1)
    return per_anchor.mean()


def of_distance(h, y, k):
    means = torch.stack([h[y == c].mean(0) for c in range(k)]).double()
    gram = means @ means.T
    target = torch.eye(k, dtype=torch.float64) / math.sqrt(k)
    return (gram / gram.norm() - target).norm().item(), gram


def orthogonal_frame_loss(sizes, tau):
    """SupCon at an orthogonal frame with collapsed classes: same-class similarity 1, others 0."""
    n = sum(sizes)
    total = 0.0
    for s in sizes:
        if s < 2:
            continue
        # Each anchor: s - 1 positives at 1/tau, n - s others at 0.
        log_denominator = math.log((s - 1) * math.exp(1.0 / tau) + (n - s))
        total += s * (log_denominator - 1.0 / tau)
    return total / sum(s for s in sizes if s >= 2)


def run(k, n_majority, ratio, seed, steps, lr, schedule, tau, dim, eps, start=None):
    minority = k // 2
    n_min = int(math.floor(n_majority / ratio))
    sizes = [n_majority] * (k - minority) + [n_min] * minority
    if start is None:
        y = torch.cat([torch.full((s,), c, dtype=torch.long) for c, s in enumerate(sizes)])
        torch.manual_seed(seed)
        w = torch.randn(len(y), dim).abs().requires_grad_(True)
    else:
        features, labels = start
        y = torch.from_numpy(labels).long()
        w = torch.from_numpy(features).float().clone().requires_grad_(True)
        sizes = [int((y == c).sum()) for c in range(k)]
        dim = w.shape[1]
    opt = torch.optim.Adam([w], lr=lr, eps=eps)
    for t in range(steps):
        rate = lr if schedule == "constant" else lr * 0.5 * (1 + math.cos(math.pi * t / steps))
        for g in opt.param_groups:
            g["lr"] = rate
        h = torch.nn.functional.normalize(torch.relu(w), dim=1)
        loss = supcon(h, y, tau)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        h = torch.nn.functional.normalize(torch.relu(w), dim=1)
        loss = supcon(h, y, tau).item()
        dist, gram = of_distance(h, y, k)
        norms = gram.diag().sqrt()
        merged = [
            (i, j)
            for i in range(k)
            for j in range(i + 1, k)
            if gram[i, j] / (norms[i] * norms[j]) > 0.5
        ]
    return {
        "framework": "pytorch",
        "classes": k,
        "ratio": ratio,
        "seed": seed,
        "steps": steps,
        "lr": lr,
        "schedule": schedule,
        "temperature": tau,
        "dim": dim,
        "adam_epsilon": eps,
        "start": "given" if start is not None else "drawn",
        "of_distance": dist,
        "loss_gap": loss - orthogonal_frame_loss(sizes, tau),
        "merged_pairs": merged,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--n-majority", type=int, default=200)
    p.add_argument("--ratios", default="10,100")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--schedule", choices=["constant", "cosine"], default="cosine")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--dim", type=int, default=0, help="feature dimension (0: 2K)")
    p.add_argument("--adam-epsilon", type=float, default=1e-8)
    p.add_argument("--start-dir", default=None,
                   help="start from the .npy features and labels written there")
    p.add_argument("--out", default=None, help="also write every run into this JSON list")
    p.add_argument("--threads", type=int, default=2, help="PyTorch's CPU threads")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    runs = []
    for token in a.ratios.split(","):
        ratio = float(token)
        for seed in [int(s) for s in a.seeds.split(",")]:
            dim = a.dim or 2 * a.classes
            start = None
            if a.start_dir is not None:
                import numpy as np

                name = f"R{token}-s{seed}.npy"
                start = (np.load(os.path.join(a.start_dir, "start-" + name)),
                         np.load(os.path.join(a.start_dir, "labels-" + name)))
            result = run(a.classes, a.n_majority, ratio, seed, a.steps, a.lr, a.schedule,
                         a.temperature, dim, a.adam_epsilon, start)
            runs.append(result)
            print(json.dumps(result), flush=True)
    if a.out is not None:
        with open(a.out, "w") as f:
            json.dump(runs, f, indent=1)


if __name__ == "__main__":
    main()
