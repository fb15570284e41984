"""IRN's random walk: sparse propagation == IRN's dense matrix squaring, and its invariants."""

import math

import numpy as np
import pytest
import torch

from csd.irn.random_walk import (
    affinity_maps,
    affinity_matrix,
    path_directions,
    propagate,
    propagate_dense,
    sem_seg_from_rw,
)


def random_inputs(shape, classes=3, seed=0, dtype=torch.float64):
    """CAMs in [0, 1] (each max-normalised, as make_cam stores them) and a blotchy edge map."""
    gen = torch.Generator().manual_seed(seed)
    h, w = shape
    cams = torch.rand(classes, h, w, generator=gen, dtype=dtype) ** 2
    cams = cams / cams.amax(dim=(1, 2), keepdim=True)
    edge = torch.rand(h, w, generator=gen, dtype=dtype) ** 3
    edge[torch.rand(h, w, generator=gen, dtype=dtype) < 0.1] = 1.0  # some hard boundaries
    return cams, edge


def brute_force_affinity(edge, radius):
    """{(p, q): 1 - max edge on the path}, from the definition, pixel pair by pixel pair."""
    h, w = edge.shape
    pixels = [(y, x) for y in range(h) for x in range(w)]
    result = {}
    for a, (ya, xa) in enumerate(pixels):
        for b, (yb, xb) in enumerate(pixels):
            dy, dx = yb - ya, xb - xa
            if b <= a or dy * dy + dx * dx >= radius * radius:
                continue
            on_path = [edge[y, x].item()
                       for y in range(min(ya, yb), max(ya, yb) + 1)
                       for x in range(min(xa, xb), max(xa, xb) + 1)
                       if (dy * (x - xa) - dx * (y - ya)) ** 2 < dy * dy + dx * dx]
            result[(a, b)] = 1 - max(on_path)
    return result


def degrees(edge, radius, beta):
    return affinity_matrix(edge, radius, beta)[1]


def labels(rw, keys):
    h, w = rw.shape[1:]
    return sem_seg_from_rw(rw, keys, (4 * h - 2, 4 * w - 3), 0.25)


def test_path_directions_follow_irn():
    directions = dict(path_directions(5))
    assert len(directions) == 34  # half of the 68 offsets strictly inside radius 5
    for dy, dx in directions:
        assert 0 < dy * dy + dx * dx < 25 and (dy > 0 or (dy == 0 and dx > 0))
        assert (-dy, -dx) not in directions
    assert set(directions[(0, 3)]) == {(0, 0), (0, 1), (0, 2), (0, 3)}
    # a diagonal step also crosses both corner pixels
    assert set(directions[(1, -1)]) == {(0, 0), (0, -1), (1, 0), (1, -1)}
    assert set(directions[(1, -4)]) == {(y, x) for y in (0, 1) for x in range(-4, 1)}
    assert path_directions(1) == ()
    with pytest.raises(ValueError, match="radius"):
        path_directions(2.5)


@pytest.mark.parametrize("radius", [2, 3, 5])
def test_affinity_matrix_matches_definition(radius):
    _, edge = random_inputs((6, 7), seed=radius)
    edge[2, 3] = 1.0  # a boundary pixel keeps self-affinity 1 (IRN's identity diagonal)
    expected = torch.eye(42, dtype=edge.dtype)
    for (a, b), value in brute_force_affinity(edge, radius).items():
        expected[a, b] = expected[b, a] = value
    matrix, degree = affinity_matrix(edge, radius, 1.0)
    assert matrix.layout == torch.sparse_csr
    torch.testing.assert_close(matrix.to_dense(), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(degree, expected.sum(0))
    powered, degree = affinity_matrix(edge, radius, 3.0)
    torch.testing.assert_close(powered.to_dense(), expected ** 3, rtol=0, atol=1e-12)
    torch.testing.assert_close(degree, (expected ** 3).sum(1))
    assert powered.to_dense()[2 * 7 + 3].sum() == 1.0  # nothing crosses a pixel with edge 1
    assert affinity_maps(edge, radius).shape == (len(path_directions(radius)), 6, 7)


def test_affinity_maps_are_differentiable():
    """IRN's training losses back-propagate through the affinities into the edge map."""
    _, edge = random_inputs((5, 6))
    edge.requires_grad_(True)
    affinity_maps(edge, 3).sum().backward()
    assert (edge.grad <= 0).all() and (edge.grad < 0).any()  # more edge, less affinity


@pytest.mark.parametrize("walk", [propagate, propagate_dense])
@pytest.mark.parametrize("exp_times", [0, 3])
def test_transition_is_column_stochastic(walk, exp_times):
    """1 @ T = 1 exactly when every column of T sums to 1 (here with a non-trivial T)."""
    gen = torch.Generator().manual_seed(5)
    edge = 0.9 * torch.rand(8, 11, generator=gen, dtype=torch.float64)
    cams = 1 / (1 - edge)[None]  # damped by (1 - edge): all ones
    out = walk(cams, edge, 4, 10, exp_times)
    torch.testing.assert_close(out, torch.ones_like(out))


@pytest.mark.parametrize("shape,radius,beta,exp_times", [
    ((9, 13), 5, 10, 8),
    ((14, 6), 5, 10, 8),
    ((11, 11), 5, 10, 4),
    ((8, 10), 3, 2.0, 0),
    ((7, 12), 4, 10, 2),
])
def test_sparse_matches_dense_float64(shape, radius, beta, exp_times):
    cams, edge = random_inputs(shape, seed=sum(shape))
    sparse = propagate(cams, edge, radius, beta, exp_times)
    dense = propagate_dense(cams, edge, radius, beta, exp_times)
    assert sparse.shape == cams.shape
    torch.testing.assert_close(sparse / sparse.max(), dense / dense.max(), rtol=1e-9, atol=1e-12)
    keys = [4, 11, 19]
    assert np.array_equal(labels(sparse, keys), labels(dense, keys))


@pytest.mark.parametrize("shape", [(10, 13), (16, 7)])
def test_sparse_matches_dense_float32(shape):
    cams, edge = random_inputs(shape, seed=1, dtype=torch.float32)
    sparse = propagate(cams, edge, 5, 10, 8)
    dense = propagate_dense(cams, edge, 5, 10, 8)
    assert sparse.dtype == torch.float32
    # Both differ from float64 by ~1e-4 (of the max) in the same direction: float32
    # rounding of T, amplified by beta and 256 steps, not a difference of method.
    torch.testing.assert_close(sparse / sparse.max(), dense / dense.max(), rtol=1e-4, atol=2e-4)
    assert np.array_equal(labels(sparse, [0, 1, 2]), labels(dense, [0, 1, 2]))


@pytest.mark.parametrize("walk", [propagate, propagate_dense])
def test_invariants_of_the_walk(walk):
    """x @ T with T column-stochastic: outputs are weighted means of the (edge-damped)
    inputs, constants stay constant, and the degree-weighted mass sum_j d_j x_j is kept."""
    cams, edge = random_inputs((9, 11), seed=3)
    radius, beta = 4, 10
    out = walk(cams, edge, radius, beta, 3)
    damped = cams * (1 - edge)
    degree = degrees(edge, radius, beta)
    mass_in = (damped.reshape(3, -1) * degree).sum(1)
    mass_out = (out.reshape(3, -1) * degree).sum(1)
    torch.testing.assert_close(mass_out, mass_in, rtol=1e-10, atol=0)
    assert (out.amax(dim=(1, 2)) <= damped.amax(dim=(1, 2)) + 1e-12).all()
    assert (out.amin(dim=(1, 2)) >= damped.amin(dim=(1, 2)) - 1e-12).all()
    flat = torch.zeros_like(edge)
    ones = torch.ones(1, 9, 11, dtype=edge.dtype)
    torch.testing.assert_close(walk(ones, flat, radius, beta, 3), ones)


def test_zero_edge_spreads_and_smooths():
    cams = torch.zeros(1, 41, 41, dtype=torch.float64)
    cams[0, 20, 20] = 1.0
    out = propagate(cams, torch.zeros(41, 41, dtype=torch.float64), 5, 10, 2)[0]
    assert out[20, 20] < 0.1  # the peak flattens
    assert (out[16:25, 16:25] > 0).all()  # four steps of reach >= 4 pixels cover this square
    assert (out[:4] == 0).all()  # ... and no more than 4 x 4 pixels away
    torch.testing.assert_close(out, out.t())  # symmetric spread
    torch.testing.assert_close(out, out.flip(0))
    # all reached pixels have the same degree (69 neighbours), so plain mass is kept
    assert out.sum().item() == pytest.approx(1.0, rel=1e-9)
    variation = (out.diff(dim=0).abs().sum() + out.diff(dim=1).abs().sum()).item()
    assert variation < 4.0  # the delta's total variation is 4


@pytest.mark.parametrize("walk", [propagate, propagate_dense])
def test_edge_wall_blocks_propagation(walk):
    h, w = 12, 14
    edge = torch.zeros(h, w, dtype=torch.float64)
    edge[:, 6] = 1.0  # a boundary wall across the full height
    cams = torch.zeros(2, h, w, dtype=torch.float64)
    cams[0, :, :6] = 1.0  # class 0 fills the left of the wall
    cams[1, 3:9, 9:12] = 1.0  # class 1 is a blob right of it
    out = walk(cams, edge, 5, 10, 8)
    assert (out[0, :, 6:] == 0).all() and (out[1, :, :7] == 0).all()
    torch.testing.assert_close(out[0, :, :6], torch.ones(h, 6, dtype=torch.float64))
    # 256 steps mix the right side completely: every pixel there holds the
    # degree-weighted mean of the blob over that side
    right = torch.zeros(h, w, dtype=torch.bool)
    right[:, 7:] = True
    degree = degrees(edge, 5, 10).reshape(h, w)
    mean = (degree * cams[1])[right].sum() / degree[right].sum()
    torch.testing.assert_close(out[1, :, 7:], mean.expand(h, 7))
    assert 0.25 < mean < 0.5
    seg = sem_seg_from_rw(out, [2, 7], (4 * h, 4 * w), 0.25)
    assert (seg[:, :24] == 3).all() and (seg[:, 32:] == 8).all()
    assert not (seg[:, 28:] == 3).any()


def test_sem_seg_from_rw_maps_channels_to_keys():
    rw = torch.zeros(2, 3, 5)
    rw[0, :, :2] = 2.0  # channel 0 on the left
    rw[1, :, 3:] = 1.0  # channel 1 on the right, half of the global max
    rw[1, 0, 4] = 0.4  # 0.2 of the max: below the background threshold
    seg = sem_seg_from_rw(rw, [14, 0], (11, 19), 0.25)
    assert seg.shape == (11, 19) and seg.dtype == np.uint8
    assert (seg[:, :6] == 15).all()  # key 14 (person) -> label 15
    assert (seg[4:, 14:] == 1).all()  # key 0 (aeroplane) -> label 1
    assert (seg[:, 9] == 0).all()  # nothing there: background
    assert (seg[0, 17:] == 0).all()
    everything_bg = sem_seg_from_rw(torch.zeros(1, 3, 5), [3], (12, 20), 0.25)
    assert (everything_bg == 0).all()
    no_classes = sem_seg_from_rw(torch.zeros(0, 3, 5), [], (12, 20), 0.25)
    assert no_classes.shape == (12, 20) and (no_classes == 0).all()


def test_bad_inputs_raise():
    cams, edge = random_inputs((6, 6))
    with pytest.raises(ValueError, match="edge map shape"):
        propagate(cams, edge[:5], 3, 10, 1)
    with pytest.raises(ValueError, match="exp_times"):
        propagate(cams, edge, 3, 10, -1)
    with pytest.raises(ValueError, match="class keys"):
        sem_seg_from_rw(cams, [1, 2], (20, 20), 0.25)
    with pytest.raises(ValueError, match="cover"):
        sem_seg_from_rw(cams, [1, 2, 3], (30, 20), 0.25)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    cams, edge = random_inputs((20, 17), dtype=torch.float32)
    cpu = propagate(cams, edge, 5, 10, 8)
    gpu = propagate(cams.cuda(), edge.cuda(), 5, 10, 8)
    gpu_dense = propagate_dense(cams.cuda(), edge.cuda(), 5, 10, 8)
    assert gpu.device.type == "cuda" and math.isfinite(gpu.sum().item())
    for other in (gpu, gpu_dense):
        torch.testing.assert_close(other.cpu() / other.max().item(), cpu / cpu.max(),
                                   rtol=1e-4, atol=2e-4)
    assert np.array_equal(labels(gpu, [3, 5, 7]), labels(cpu, [3, 5, 7]))
