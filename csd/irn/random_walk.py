"""IRN's random walk: propagate CAMs over the boundary map to get semantic pseudo masks.

IRN (Ahn et al., CVPR'19) turns its predicted boundary map B (stride 4, values in [0, 1])
into pixel affinities: for two pixels closer than `radius`, a = 1 - max(B) over the pixels
on the straight path between them (both end points included), every pixel has affinity 1
to itself, pixels further apart have affinity 0. The transition matrix is
T = A^beta (elementwise), normalised so that every column sums to 1, and the CAMs, damped
by (1 - B), are propagated as rw = x @ T^(2^exp_times).

IRN squares the dense N x N matrix exp_times times (~550 MB per copy for a 500x375
image, O(N^3) work). T has only ~radius^2 non-zeros per column, so `propagate` applies it
2^exp_times times as sparse matrix products instead: the same result, far cheaper.
`propagate_dense` keeps IRN's formulation for the parity test and the benchmark.

Invariants of x @ T (T column-stochastic, A symmetric with degrees d = A.sum(0)):
every output pixel is a weighted mean of input pixels, so constants are preserved and
values stay within [min x, max x]; the degree-weighted mass sum_j d_j x_j is conserved.
"""

import functools
import warnings

import numpy as np
import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=None)
def path_directions(radius):
    """IRN's pair directions and, for each, the pixel offsets on its straight path.

    Directions (dy, dx) with 0 < dy^2 + dx^2 < radius^2 in a half-plane (dy > 0, or
    dy == 0 and dx > 0), so every unordered pixel pair occurs once. A path holds the
    pixels of the pair's bounding box closer than 1 to the line through both ends.
    Returns a tuple of ((dy, dx), ((py, px), ...)).
    """
    if not isinstance(radius, (int, np.integer)) or radius < 1:
        raise ValueError(f"random walk radius must be an integer >= 1, got {radius!r}")
    radius = int(radius)
    directions = [(0, dx) for dx in range(1, radius)]
    directions += [(dy, dx) for dy in range(1, radius) for dx in range(-radius + 1, radius)
                   if dy * dy + dx * dx < radius * radius]
    result = []
    for dy, dx in directions:
        length_sq = dy * dy + dx * dx
        path = [(py, px)
                for py in range(min(0, dy), max(0, dy) + 1)
                for px in range(min(0, dx), max(0, dx) + 1)
                if (dy * px - dx * py) ** 2 < length_sq]  # distance to the line < 1
        result.append(((dy, dx), tuple(path)))
    return tuple(result)


def affinity_maps(edge, radius):
    """Affinity of every pixel to its partner in each direction of `path_directions`.

    edge: [h, w] boundary map. Returns [D, h, w]: entry (k, y, x) is the affinity between
    (y, x) and (y + dy_k, x + dx_k); 0 where the partner lies outside the image.
    Differentiable in `edge` (IRN's affinity losses train through it).
    """
    if edge.dim() != 2:
        raise ValueError(f"edge map must be [h, w], got shape {tuple(edge.shape)}")
    h, w = edge.shape
    directions = path_directions(radius)
    reach = radius - 1  # farthest offset of any path point
    # Pad with 1 (a wall): pairs reaching outside the image get affinity 0 and are dropped.
    padded = F.pad(edge[None], (reach, reach, 0, reach), value=1.0)[0]
    maps = []
    for _, path in directions:
        highest = None
        for py, px in path:
            shifted = padded[py:py + h, reach + px:reach + px + w]
            highest = shifted if highest is None else torch.maximum(highest, shifted)
        maps.append(1 - highest)
    return torch.stack(maps) if maps else edge.new_zeros(0, h, w)


def _csr(row_starts, columns, values, size):
    with warnings.catch_warnings():  # "CSR support is in beta": it works, and is fastest
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(row_starts, columns, values, size,
                                       check_invariants=False)


def affinity_matrix(edge, radius, beta):
    """A^beta as a sparse CSR matrix [N, N] (N = h*w, flat row-major pixels) + its degrees.

    A is symmetric (both directions of every pair), has 1 on the diagonal whatever the
    edge there (IRN's affinity_sparse2dense adds an identity), and holds 0 (not stored)
    for pixels `radius` or more apart. degree = A^beta.sum(0) = A^beta.sum(1).
    """
    if not beta > 0:
        raise ValueError(f"random walk beta must be > 0, got {beta!r}")
    weights = affinity_maps(edge, radius).pow(beta)
    h, w = edge.shape
    # Pixel j's neighbours: j + d for each direction d (weight of j's own pair), j - d
    # (weight of the pair starting at j - d) and j itself.
    reach = radius - 1
    padded = F.pad(weights, (reach, reach, reach, reach))  # zero weight outside the image
    offsets, planes = [(0, 0)], [torch.ones_like(edge)]
    for k, ((dy, dx), _) in enumerate(path_directions(radius)):
        offsets += [(dy, dx), (-dy, -dx)]
        planes += [weights[k], padded[k, reach - dy:reach - dy + h, reach - dx:reach - dx + w]]
    # Sorted offsets give each row's columns in increasing order: CSR without a sort.
    order = sorted(range(len(offsets)), key=offsets.__getitem__)
    planes = torch.stack([planes[i] for i in order], dim=-1).reshape(h * w, len(order))
    keep = planes != 0  # pairs leaving the image, or across a full boundary
    # int32 indices: ~20% faster products than int64 on CPU (less memory traffic)
    index = torch.int32 if h * w * len(order) < 2 ** 31 else torch.int64
    shift = torch.tensor([offsets[i][0] * w + offsets[i][1] for i in order], dtype=index,
                         device=edge.device)
    columns = (torch.arange(h * w, dtype=index, device=edge.device)[:, None] + shift)[keep]
    row_starts = F.pad(keep.sum(1).cumsum(0), (1, 0)).to(index)
    return _csr(row_starts, columns, planes[keep], (h * w, h * w)), planes.sum(1)


def _check_inputs(cams, edge, exp_times):
    if cams.dim() != 3:
        raise ValueError(f"cams must be [C, h, w], got shape {tuple(cams.shape)}")
    if edge.shape != cams.shape[1:]:
        raise ValueError(f"edge map shape {tuple(edge.shape)} differs from the CAMs' "
                         f"spatial shape {tuple(cams.shape[1:])} (both stride 4)")
    if edge.device != cams.device:
        raise ValueError(f"edge map on {edge.device}, CAMs on {cams.device}")
    if not isinstance(exp_times, (int, np.integer)) or exp_times < 0:
        raise ValueError(f"random walk exp_times must be an integer >= 0, got {exp_times!r}")
    if not cams.is_floating_point():
        raise ValueError(f"cams must be a float tensor, got {cams.dtype}")


def propagate(cams, edge, radius, beta, exp_times):
    """IRN's random walk, sparse: cams [C, h, w], edge [h, w] -> rw [C, h, w].

    rw = ((1 - edge) * cams) @ T^(2^exp_times), applied as 2^exp_times sparse products
    with T's transpose (CSR) on the inputs' device, in the CAMs' dtype.
    """
    _check_inputs(cams, edge, exp_times)
    c, h, w = cams.shape
    edge = edge.to(cams.dtype)
    affinity, degree = affinity_matrix(edge, radius, beta)
    # x @ T == (T^t @ x^t)^t with T^t = D^-1 A: divide each CSR row by its degree.
    row_starts = affinity.crow_indices()
    step = _csr(row_starts, affinity.col_indices(),
                affinity.values() / torch.repeat_interleave(degree, row_starts.diff()),
                affinity.shape)
    walk = (cams * (1 - edge)).reshape(c, h * w).t().contiguous()
    for _ in range(2 ** exp_times):
        walk = step @ walk
    return walk.t().reshape(c, h, w)


def propagate_dense(cams, edge, radius, beta, exp_times):
    """IRN's dense formulation (N x N matrix squared exp_times times); reference only."""
    _check_inputs(cams, edge, exp_times)
    c, h, w = cams.shape
    edge = edge.to(cams.dtype)
    affinity, degree = affinity_matrix(edge, radius, beta)
    power = affinity.to_dense()
    del affinity
    power /= degree  # column normalisation: T = A D^-1
    for _ in range(exp_times):
        power = power @ power
    walk = (cams * (1 - edge)).reshape(c, h * w) @ power
    return walk.reshape(c, h, w)


def sem_seg_from_rw(rw, keys, image_size, bg_threshold):
    """Random-walk output [C, h, w] -> VOC label map [H, W] (uint8 numpy), as IRN.

    Upsample x4 (bilinear), crop to image_size = (H, W), divide by the global max, put a
    constant background plane `bg_threshold` in front and take the argmax. keys: the
    image's class indices (0..19), one per channel of rw; labels are 0 = background,
    keys + 1 for the classes.
    """
    keys = np.asarray(keys, dtype=np.int64).reshape(-1)
    if rw.dim() != 3 or rw.shape[0] != len(keys):
        raise ValueError(f"rw of shape {tuple(rw.shape)} does not match {len(keys)} class keys")
    if len(keys) and (keys.min() < 0 or keys.max() > 253):  # label 255 means ignore
        raise ValueError(f"class keys must lie in 0..253, got {keys.tolist()}")
    height, width = int(image_size[0]), int(image_size[1])
    if rw.shape[1] * 4 < height or rw.shape[2] * 4 < width:
        raise ValueError(f"rw of shape {tuple(rw.shape)} upsampled x4 does not cover the "
                         f"image size {(height, width)}")
    if not len(keys):
        return np.zeros((height, width), dtype=np.uint8)
    up = F.interpolate(rw[None], scale_factor=4, mode="bilinear", align_corners=False)
    up = up[0, :, :height, :width]
    if up.numel() and up.max() > 0:  # IRN divides unguarded (all-zero -> NaN)
        up = up / up.max()
    scores = F.pad(up, (0, 0, 0, 0, 1, 0), value=bg_threshold)
    label_of_channel = np.concatenate([[0], keys + 1]).astype(np.uint8)
    return label_of_channel[scores.argmax(0).cpu().numpy()]
