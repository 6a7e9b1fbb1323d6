"""Statistics of UFM+ starting features: scl-train's (the .npy files `cargo xtask bench ufm
--starts DIR` keeps) beside PyTorch's own draw (`torch.randn(N, d).abs()` after
`torch.manual_seed(seed)`, as ufm_torch.py draws them), pooled over seeds, with the values of
|N(0, 1)|: whether the two programs start from the same distribution.

    cargo xtask bench ufm --ratios 100 --seeds 0,1,...,49 --steps 1 --starts /tmp/starts
    python3 benches/reference/ufm_start_stats.py --start-dir /tmp/starts --ratio 100 \
        --seeds 0,1,...,49
"""

import argparse
import math
import os

import numpy as np
import torch


def stats(x):
    return {
        "mean": x.mean(),
        "variance": x.var(),
        "P(x > 2)": (x > 2).mean(),
        "P(x < 0.1)": (x < 0.1).mean(),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--start-dir", required=True)
    p.add_argument("--ratio", default="100", help="as given to `bench ufm --ratios`")
    p.add_argument("--seeds", default="0,1,2")
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    ours, theirs = [], []
    for seed in seeds:
        start = np.load(os.path.join(a.start_dir, f"start-R{a.ratio}-s{seed}.npy"))
        ours.append(start.ravel())
        torch.manual_seed(seed)
        theirs.append(torch.randn(*start.shape).abs().numpy().ravel())
    ours, theirs = np.concatenate(ours), np.concatenate(theirs)
    # |N(0, 1)|: mean sqrt(2 / pi), variance 1 - 2 / pi, tails from the normal CDF.
    phi = lambda t: 0.5 * (1 + math.erf(t / math.sqrt(2)))
    theory = {
        "mean": math.sqrt(2 / math.pi),
        "variance": 1 - 2 / math.pi,
        "P(x > 2)": 2 * (1 - phi(2)),
        "P(x < 0.1)": 2 * phi(0.1) - 1,
    }
    print(f"{len(seeds)} seeds, {ours.size} values each")
    print("| statistic | scl-train | PyTorch | abs N(0, 1) |")
    print("|---|---|---|---|")
    for (name, mine), yours in zip(stats(ours).items(), stats(theirs).values()):
        print(f"| {name} | {mine:.4f} | {yours:.4f} | {theory[name]:.4f} |")


if __name__ == "__main__":
    main()
