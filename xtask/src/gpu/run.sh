#!/usr/bin/env bash
# The GPU check of the scl workspace (written by `cargo xtask gpu-bundle`; do not edit the copy
# in the bundle). Usage: bash run.sh OUT_DIR
#
# Runs PyTorch's reference benchmark (supcon_torch.py: the SupCon loss up to N = 65536 and
# ResNet-18 SCL steps at batch 512), then scl-gpu-check (fused vs reference parity, the same
# loss benchmark and training on CUDA and wgpu, a few CPU training steps). Writes into OUT_DIR:
#   gpu-check.md, gpu-check.json   our numbers, PyTorch's beside them as ratios
#   torch.json, torch.log          PyTorch's numbers and its output
#   gpu-check.log                  our output
#   machine.txt                    nvidia-smi, the CPU, the Vulkan driver files
# About 8 minutes at most: PyTorch 120 s (hard limit), ours about 300 s by its own limits
# (420 s hard limit).
set -u
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: bash run.sh OUT_DIR [gpu-check options]}"
shift
mkdir -p "$out"
export SCL_REVISION="$(cat "$here/REVISION" 2>/dev/null || echo unknown)"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

# wgpu needs the Vulkan loader; the GPU machines may lack it. Unpack the carried package
# (as root) only where no loader is installed.
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1'; then
  if ls "$here"/gl/*.deb >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    for f in "$here"/gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
  fi
fi
# The NVIDIA Vulkan driver file, where the loader's default folders do not name it.
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ] \
   && ! ls /usr/share/vulkan/icd.d/nvidia* /etc/vulkan/icd.d/nvidia* >/dev/null 2>&1; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "revision: $SCL_REVISION"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || echo "nvidia-smi: not found"
  echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-}"
  ldconfig -p 2>/dev/null | grep libvulkan || echo "no libvulkan in ldconfig"
} > "$out/machine.txt"

data=()
if [ -f "$here/data/cifar10-train-subset.bin" ]; then
  data=(--data "$here/data/cifar10-train-subset.bin")
fi

echo "== PyTorch reference (120 s at most)"
if command -v python3 >/dev/null; then
  PYTHONUNBUFFERED=1 timeout 120 python3 "$here/supcon_torch.py" --out "$out/torch.json" \
    --time-limit 100 "${data[@]}" > "$out/torch.log" 2>&1
  echo "supcon_torch.py exit $?: $(tail -n 1 "$out/torch.log")"
else
  echo "no python3: no PyTorch column" | tee "$out/torch.log"
fi

echo "== scl-gpu-check (420 s at most)"
timeout 420 "$here/scl-gpu-check" --out "$out" --torch "$out/torch.json" \
  "${data[@]}" "$@" 2>&1 | tee "$out/gpu-check.log"
status=${PIPESTATUS[0]}
echo "scl-gpu-check exit $status; results in $out/gpu-check.md"
exit "$status"
