#!/usr/bin/env python3
"""PyTorch reference for the GPU check: the SupCon loss benchmark and ResNet-18 SCL step timing,
measured the same way as `scl-gpu-check gpu-check` (xtask/src/gpu/) so that the two can be
put side by side on one GPU.

- Loss: SupConLoss with the semantics of HobbitLong/SupContrast's losses.py (contrast_mode
  'all', the N x N logits, masks and log-probabilities formed in full, unfused), tau = 0.1,
  base temperature 0.1, features [N, 1, 128] L2-normalised inside the timed region, labels
  i mod 10; forward + backward + the gradient copied to the host; median of --repeats runs
  after a warm-up. Memory: peak allocated beyond the inputs. An out-of-memory is recorded,
  not raised.
- Training: ResNet-18 with the CIFAR stem (3x3 stride-1 first convolution, no max-pool),
  final ReLU, global average pooling, L2-normalised 512-d embedding; SupCon tau = 0.1, base
  0.07; SGD lr 0.1, momentum 0.9, weight decay 5e-4; two views (image, vertical flip) made
  on the device; eager mode, f32. Images/s over the steps after --warmup.

Usage: python3 supcon_torch.py --out torch.json [--data cifar10-train-subset.bin]
       [--device cuda|cpu] [--sizes 1024,...] [--batch 512] [--steps 40] [--time-limit 100]
       [--loss-only] [--threads T]
Without a CUDA device (and --device cuda) it writes torch.json saying so and exits 0.
`cargo xtask bench loss` runs it with --device cpu --loss-only --threads <cores>: on the CPU
the memory is the growth of the peak resident set over the run of one size (sizes in
increasing order, so each larger one raises it), as `bench train` measures PyTorch.
"""

import argparse
import json
import math
import statistics
import sys
import time

RECORD = 1 + 3072
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)


def supcon_loss(torch, features, labels, temperature=0.1, base_temperature=0.1):
    """SupContrast's SupConLoss.forward, contrast_mode 'all' ([N, V, d] features)."""
    device = features.device
    batch_size = features.shape[0]
    labels = labels.contiguous().view(-1, 1)
    mask = torch.eq(labels, labels.T).float().to(device)
    contrast_count = features.shape[1]
    contrast_feature = torch.cat(torch.unbind(features, dim=1), dim=0)
    anchor_feature = contrast_feature
    anchor_count = contrast_count
    anchor_dot_contrast = torch.div(
        torch.matmul(anchor_feature, contrast_feature.T), temperature
    )
    logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
    logits = anchor_dot_contrast - logits_max.detach()
    mask = mask.repeat(anchor_count, contrast_count)
    logits_mask = torch.scatter(
        torch.ones_like(mask),
        1,
        torch.arange(batch_size * anchor_count).view(-1, 1).to(device),
        0,
    )
    mask = mask * logits_mask
    exp_logits = torch.exp(logits) * logits_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    mask_pos_pairs = mask.sum(1)
    mask_pos_pairs = torch.where(mask_pos_pairs < 1e-6, 1, mask_pos_pairs)
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask_pos_pairs
    loss = -(temperature / base_temperature) * mean_log_prob_pos
    return loss.view(anchor_count, batch_size).mean()


def sync(torch, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mib():
    """The process's peak resident set so far, in MiB (Linux reports KiB)."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_loss(torch, device, sizes, dim, repeats, deadline):
    F = torch.nn.functional
    rows = []
    last = None  # (n, seconds of one run)
    for n in sizes:
        row = {"n": n, "dim": dim, "seconds": None, "memory_mib": None, "tflops": None,
               "note": None}
        rows.append(row)
        left = deadline - time.monotonic()
        if last is not None and last[1] * (n / last[0]) ** 2 * (repeats + 1) > left:
            row["note"] = "skipped: time limit"
            continue
        try:
            gen = torch.Generator(device=device).manual_seed(n)
            x = torch.randn(n, 1, dim, device=device, generator=gen, requires_grad=True)
            y = torch.arange(n, device=device) % 10
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            else:
                base = peak_rss_mib()

            def run():
                x.grad = None
                loss = supcon_loss(torch, F.normalize(x, dim=2), y)
                loss.backward()
                x.grad.cpu()

            run()  # warm-up
            times = []
            for _ in range(max(1, repeats)):
                sync(torch, device)
                start = time.perf_counter()
                run()
                sync(torch, device)
                times.append(time.perf_counter() - start)
            t = statistics.median(times)
            row["seconds"] = t
            row["tflops"] = 3 * 2 * n * n * dim / t / 1e12
            if device.type == "cuda":
                row["memory_mib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
            else:
                row["memory_mib"] = peak_rss_mib() - base
            last = (n, t)
        except torch.cuda.OutOfMemoryError as e:
            row["note"] = "out of memory: " + str(e).splitlines()[0][:160]
        except RuntimeError as e:  # e.g. an allocation beyond what the CPU allows
            row["note"] = "failed: " + str(e).splitlines()[0][:160]
        finally:
            x = y = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
        print(f"loss N = {n}: {row['seconds'] if row['seconds'] is not None else '-'} s "
              f"{row['note'] or ''}", flush=True)
    return rows


def resnet18(torch, num_classes=10):
    nn = torch.nn

    class BasicBlock(nn.Module):
        def __init__(self, i, o, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(i, o, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(o)
            self.conv2 = nn.Conv2d(o, o, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(o)
            self.downsample = None
            if stride != 1 or i != o:
                self.downsample = nn.Sequential(
                    nn.Conv2d(i, o, 1, stride, bias=False), nn.BatchNorm2d(o))

        def forward(self, x, end_relu=True):
            shortcut = x if self.downsample is None else self.downsample(x)
            h = torch.relu(self.bn1(self.conv1(x)))
            h = self.bn2(self.conv2(h)) + shortcut
            return torch.relu(h) if end_relu else h

    class ResNet18(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            blocks, i = [], 64
            for stage, o in enumerate([64, 128, 256, 512]):
                blocks.append(BasicBlock(i, o, 1 if stage == 0 else 2))
                blocks.append(BasicBlock(o, o, 1))
                i = o
            self.blocks = nn.ModuleList(blocks)
            self.classifier = nn.Linear(512, num_classes)  # unused by SCL, as in ours

        def embed(self, x, final_relu=True):
            h = torch.relu(self.bn1(self.conv1(x)))
            last = len(self.blocks) - 1
            for k, block in enumerate(self.blocks):
                h = block(h, k < last or final_relu)
            h = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(h, 1), 1)
            return torch.nn.functional.normalize(h, dim=1)

    return ResNet18()


def read_images(torch, path):
    if path is None:
        g = torch.Generator().manual_seed(0)
        n = 4096
        pixels = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
        labels = torch.arange(n) % 10
        return pixels, labels, f"synthetic images: {n} seeded random 32x32 RGB images"
    raw = open(path, "rb").read()
    if len(raw) == 0 or len(raw) % RECORD:
        sys.exit(f"--data {path}: {len(raw)} bytes is not a whole number of CIFAR records")
    t = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(-1, RECORD)
    labels = t[:, 0].long()
    pixels = t[:, 1:].reshape(-1, 3, 32, 32).clone()
    return pixels, labels, f"real images: {len(labels)} CIFAR-10 training images from {path}"


def train(torch, device, pixels, labels, batch, steps, warmup, deadline):
    torch.manual_seed(0)
    model = resnet18(torch).to(device)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    n_images = labels.shape[0]
    result = {"batch": batch, "steps": 0, "warmup": warmup, "timed_seconds": 0.0,
              "images_per_second": 0.0, "loss": [], "step_seconds": [], "note": None}
    for step in range(steps):
        if step > warmup and time.monotonic() > deadline:
            result["note"] = f"stopped at the time limit after {step} of {steps} steps"
            break
        start = time.perf_counter()
        idx = (torch.arange(batch) + step * batch) % n_images
        x = ((pixels[idx].float() / 255.0 - mean) / std).to(device)
        y = labels[idx].to(device)
        views = torch.cat([x, torch.flip(x, dims=[2])], dim=0)
        z = model.embed(views)
        z = z.view(2, batch, -1).transpose(0, 1)
        loss = supcon_loss(torch, z, y, temperature=0.1, base_temperature=0.07)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = loss.item()  # waits for the device
        result["step_seconds"].append(time.perf_counter() - start)
        result["loss"].append(value)
        print(f"train step {step}: loss {value:.4f}, {result['step_seconds'][-1]:.3f} s",
              flush=True)
        if not math.isfinite(value):
            result["note"] = f"the loss became {value} at step {step}"
            break
    result["steps"] = len(result["loss"])
    timed = result["step_seconds"][warmup:]
    result["timed_seconds"] = sum(timed)
    if timed:
        result["images_per_second"] = len(timed) * batch / sum(timed)
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--sizes", default="1024,4096,8192,16384,32768,65536")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--data", default=None)
    p.add_argument("--time-limit", type=float, default=100.0,
                   help="seconds for the loss benchmark and the training together")
    p.add_argument("--loss-only", action="store_true",
                   help="the loss benchmark alone, with the whole time limit")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for PyTorch (default: its own choice)")
    a = p.parse_args()
    if a.steps <= a.warmup:
        sys.exit(f"--steps {a.steps} is not allowed: it must exceed --warmup {a.warmup}")
    result = {"torch": None, "device": None, "unavailable": None, "data": None,
              "loss": [], "train": None}

    def write():
        tmp = a.out + ".partial"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=2)
        import os
        os.replace(tmp, a.out)

    try:
        import torch
    except ImportError as e:
        result["unavailable"] = f"no PyTorch: {e}"
        write()
        print(result["unavailable"])
        return 0
    result["torch"] = torch.__version__
    if a.device == "cuda" and not torch.cuda.is_available():
        result["unavailable"] = "no CUDA device: torch.cuda.is_available() is False"
        write()
        print(result["unavailable"])
        return 0
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    result["device"] = (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else f"CPU ({torch.get_num_threads()} threads)")
    start = time.monotonic()
    sizes = [int(s) for s in a.sizes.split(",") if s]
    if a.loss_only:
        result["loss"] = bench_loss(torch, device, sizes, a.dim, a.repeats,
                                    start + a.time_limit)
        write()
        return 0
    pixels, labels, result["data"] = read_images(torch, a.data)
    # Two thirds of the time for the loss benchmark, the rest (at least) for training.
    result["loss"] = bench_loss(torch, device, sizes, a.dim, a.repeats,
                                start + a.time_limit * 2 / 3)
    write()
    result["train"] = train(torch, device, pixels, labels, a.batch, a.steps, a.warmup,
                            start + a.time_limit)
    write()
    t = result["train"]
    print(f"PyTorch {result['torch']} on {result['device']}: "
          f"{t['images_per_second']:.1f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
