"""Benchmark IRN's random walk: dense matrix squaring (IRN) vs sparse products (csd).

    .venv/bin/python benchmarks/random_walk.py --device cpu --size 500x375

Synthetic but realistic inputs at stride 4 (125x94 for a 500x375 image): an edge map of
blurred object outlines and clutter lines, CAMs of 3 classes peaking inside 3 objects.
Times both formulations in this process (warm-up, then the median of the repeats),
measures each one's peak memory in a fresh child process (CPU: peak RSS above the
child's RSS just before the call; CUDA: torch.cuda.max_memory_allocated above the
allocation before it), and compares the final label maps of `sem_seg_from_rw`. The last
line is `speedup=<x> memory_ratio=<y> agreement=<z>`. CPU timings use --threads (default
1) for both methods.
"""

import argparse
import gc
import json
import math
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from csd.irn.random_walk import (
    affinity_matrix,
    propagate,
    propagate_dense,
    sem_seg_from_rw,
)

KEYS = [2, 7, 14]  # bird, car, person -> labels 3, 8, 15


def parse_size(text):
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"--size must look like 500x375 (width x height), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def blur(image, sigma):
    radius = max(1, int(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-x ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    out = F.pad(image[None, None], (radius,) * 4, mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1))
    return F.conv2d(out, kernel.view(1, 1, -1, 1))[0, 0]


def make_inputs(width, height, seed):
    """Stride-4 edge map [h, w] and CAMs [3, h, w], deterministic given the seed."""
    gen = torch.Generator().manual_seed(seed)
    h, w = math.ceil(height / 4), math.ceil(width / 4)

    def uniform(low, high):
        return low + (high - low) * torch.rand((), generator=gen).item()

    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                            torch.arange(w, dtype=torch.float32), indexing="ij")
    regions = torch.zeros(h, w, dtype=torch.long)
    objects = []
    for index in range(1, 7):  # random ellipses, later ones on top
        cy, cx = uniform(0.15, 0.85) * h, uniform(0.15, 0.85) * w
        ay, ax = uniform(0.08, 0.3) * h, uniform(0.08, 0.3) * w
        angle = uniform(0, math.pi)
        dy, dx = ys - cy, xs - cx
        u = dx * math.cos(angle) + dy * math.sin(angle)
        v = -dx * math.sin(angle) + dy * math.cos(angle)
        regions[(u / ax) ** 2 + (v / ay) ** 2 < 1] = index
        objects.append((cy, cx, ay, ax))
    outline = torch.zeros(h, w)
    outline[1:] += (regions[1:] != regions[:-1]).float()
    outline[:, 1:] += (regions[:, 1:] != regions[:, :-1]).float()
    for _ in range(8):  # clutter: texture lines inside objects and background
        y0, x0, y1, x1 = uniform(0, h), uniform(0, w), uniform(0, h), uniform(0, w)
        length = max(abs(y1 - y0), abs(x1 - x0), 1.0)
        t = torch.linspace(0, 1, int(2 * length) + 1)
        py = (y0 + t * (y1 - y0)).long().clamp(0, h - 1)
        px = (x0 + t * (x1 - x0)).long().clamp(0, w - 1)
        outline[py, px] = torch.maximum(outline[py, px], torch.tensor(uniform(0.3, 0.7)))
    edge = blur(outline.clamp(max=1), 1.0)
    edge = 0.97 * edge / edge.max() + 0.03 * blur(torch.rand(h, w, generator=gen), 2.0)
    edge = edge.clamp(0, 1)

    cams = []
    for cy, cx, ay, ax in objects[-3:]:  # the topmost three objects are the image's classes
        py, px = cy + uniform(-0.4, 0.4) * ay, cx + uniform(-0.4, 0.4) * ax
        bump = torch.exp(-(ys - py) ** 2 / (2 * (0.6 * ay) ** 2)
                         - (xs - px) ** 2 / (2 * (0.6 * ax) ** 2))
        noise = blur(torch.rand(h, w, generator=gen), 3.0)
        cam = torch.relu(bump + 0.3 * (noise - noise.mean()))
        cams.append(cam / cam.max())
    return torch.stack(cams), edge


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats):
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return result, times


def rss_kib(field):
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", text).group(1))


def child_peak(args):
    """Child process: peak memory (bytes) of one call of `args.child` above what was there."""
    device = torch.device(args.device)
    width, height = args.size
    cams, edge = make_inputs(width, height, args.seed)
    cams, edge = cams.to(device), edge.to(device)
    walk = {"sparse": propagate, "dense": propagate_dense}.get(args.child)
    if walk is not None:  # a tiny call loads the libraries, leaves no big heap behind
        walk(cams[:, :8, :8].contiguous(), edge[:8, :8].contiguous(), args.radius, args.beta, 1)
    gc.collect()
    result = {"method": args.child}
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        if walk is not None:
            walk(cams, edge, args.radius, args.beta, args.exp_times)
        sync(device)
        result["peak_bytes"] = torch.cuda.max_memory_allocated(device) - before
    else:
        before = rss_kib("VmRSS")
        try:  # writing 5 resets VmHWM to the current RSS (Linux >= 4.0)
            Path("/proc/self/clear_refs").write_text("5")
            reset = True
        except OSError:
            reset = False
        if walk is not None:
            walk(cams, edge, args.radius, args.beta, args.exp_times)
        result["hwm_bytes"] = rss_kib("VmHWM") * 1024
        if reset:
            result["peak_bytes"] = (rss_kib("VmHWM") - before) * 1024
    print(json.dumps(result))


def measure_peaks(args):
    peaks = {}
    for method in ("baseline", "sparse", "dense"):
        cmd = [sys.executable, __file__, "--child", method, "--device", args.device,
               "--size", f"{args.size[0]}x{args.size[1]}", "--seed", str(args.seed),
               "--radius", str(args.radius), "--beta", str(args.beta),
               "--exp-times", str(args.exp_times), "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"memory child {method} failed:\n{proc.stderr[-4000:]}")
        peaks[method] = json.loads(proc.stdout.strip().splitlines()[-1])
    if args.device == "cpu" and "peak_bytes" not in peaks["sparse"]:
        # no VmHWM reset here: subtract a child that only imported torch and built inputs
        for method in ("sparse", "dense"):
            baseline = peaks["baseline"]["hwm_bytes"]
            peaks[method]["peak_bytes"] = peaks[method]["hwm_bytes"] - baseline
    return peaks["sparse"]["peak_bytes"], peaks["dense"]["peak_bytes"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--size", type=parse_size, default=(500, 375), help="image WxH")
    parser.add_argument("--repeats", type=int, default=5, help="timed sparse runs")
    parser.add_argument("--dense-repeats", type=int, default=3, help="timed dense runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--radius", type=int, default=5)
    parser.add_argument("--beta", type=float, default=10.0)
    parser.add_argument("--exp-times", type=int, default=8)
    parser.add_argument("--bg-threshold", type=float, default=0.25)
    # One thread for both by default: an equal footing, and the sparse loop (256 products
    # of ~1 ms) stalls at OpenMP barriers when other jobs share the cores.
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for both methods (0: torch's default)")
    parser.add_argument("--child", choices=["sparse", "dense", "baseline"],
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")
    if args.child:
        return child_peak(args)

    device = torch.device(args.device)
    width, height = args.size
    cams, edge = make_inputs(width, height, args.seed)
    cams, edge = cams.to(device), edge.to(device)
    n = edge.numel()
    nnz = affinity_matrix(edge, args.radius, args.beta)[0].values().numel()
    print(f"image {width}x{height}, stride-4 maps {edge.shape[1]}x{edge.shape[0]} (w x h), "
          f"N = {n} pixels, {cams.shape[0]} classes, device {device}, "
          f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}")
    print(f"radius {args.radius}, beta {args.beta:g}, exp_times {args.exp_times} "
          f"(T^{2 ** args.exp_times}); sparse T: {nnz} non-zeros ({nnz / n:.1f} per pixel), "
          f"dense T: {n * n} entries ({n * n * 4 / 2 ** 20:.0f} MiB in float32)")

    walk_args = (args.radius, args.beta, args.exp_times)
    small = (cams[:, :20, :20].contiguous(), edge[:20, :20].contiguous())
    propagate_dense(*small, *walk_args)  # warm-up: BLAS threads, kernels
    propagate(cams, edge, *walk_args)
    sparse, sparse_times = timed(lambda: propagate(cams, edge, *walk_args), device, args.repeats)
    print(f"sparse: median {statistics.median(sparse_times) * 1e3:.1f} ms over {args.repeats} "
          f"runs ({', '.join(f'{t * 1e3:.0f}' for t in sparse_times)} ms)", flush=True)
    dense, dense_times = timed(lambda: propagate_dense(cams, edge, *walk_args), device,
                               args.dense_repeats)
    print(f"dense:  median {statistics.median(dense_times):.2f} s over {args.dense_repeats} "
          f"runs ({', '.join(f'{t:.1f}' for t in dense_times)} s)", flush=True)
    speedup = statistics.median(dense_times) / statistics.median(sparse_times)

    image_size = (height, width)
    labels_sparse = sem_seg_from_rw(sparse, KEYS, image_size, args.bg_threshold)
    labels_dense = sem_seg_from_rw(dense, KEYS, image_size, args.bg_threshold)
    agreement = float((labels_sparse == labels_dense).mean())
    difference = (sparse / sparse.max() - dense / dense.max()).abs().max().item()
    # float64 sparse == float64 dense to ~1e-13 (tests), so it is the reference here.
    exact = propagate(cams.double(), edge.double(), *walk_args)
    labels_exact = sem_seg_from_rw(exact, KEYS, image_size, args.bg_threshold)
    exact = exact / exact.max()
    print(f"normalised rw: max |sparse - dense| = {difference:.2e}; vs float64: sparse "
          f"{(sparse.double() / sparse.max() - exact).abs().max().item():.2e}, dense "
          f"{(dense.double() / dense.max() - exact).abs().max().item():.2e}")
    values, counts = np.unique(labels_sparse, return_counts=True)
    print(f"labels: sparse == dense on {agreement:.6f} of {labels_sparse.size} pixels; "
          f"== float64: sparse {(labels_sparse == labels_exact).mean():.6f}, "
          f"dense {(labels_dense == labels_exact).mean():.6f}; label counts "
          f"{dict(zip(values.tolist(), counts.tolist()))}")
    del sparse, dense, exact
    gc.collect()

    sparse_peak, dense_peak = measure_peaks(args)
    memory_ratio = dense_peak / sparse_peak
    unit = "allocated by torch" if device.type == "cuda" else "peak RSS increase"
    print(f"memory ({unit}, one call in a fresh process): "
          f"sparse {sparse_peak / 2 ** 20:.1f} MiB, dense {dense_peak / 2 ** 20:.1f} MiB")
    print(f"speedup {speedup:.0f}x, memory ratio {memory_ratio:.0f}x, "
          f"label agreement {agreement:.6f}")
    print(f"speedup={speedup:.1f} memory_ratio={memory_ratio:.1f} agreement={agreement:.6f}")


if __name__ == "__main__":
    main()
