"""stylefreq.ops.grid_sample: F.grid_sample's function (bilinear, zeros, align_corners=False) with
gradients of any order."""

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from stylefreq.ops.grid_sample import grid_sample as _grid_sample, native_double_backward_works


def grid_sample(x, grid):
    """The reference (gather-based) implementation, whatever the installed torch supports."""
    return _grid_sample(x, grid, impl='ref')


def torch_grid_sample(x, grid):
    return F.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)


def random_case(n, c, h, w, ho, wo, dtype, seed, spread=1.3):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen, dtype=dtype)
    # Coordinates somewhat beyond [-1, 1], so zero padding and partial taps at the border are hit.
    grid = (torch.rand(n, ho, wo, 2, generator=gen, dtype=dtype) * 2 - 1) * spread
    return x, grid


@pytest.mark.parametrize('shape', [(1, 1, 5, 5, 4, 4), (3, 4, 7, 9, 5, 6), (2, 3, 16, 11, 20, 13)])
def test_matches_torch_float32(shape):
    x, grid = random_case(*shape, torch.float32, seed=sum(shape))
    ref = torch_grid_sample(x, grid)
    out = grid_sample(x, grid)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert (out - ref).abs().max().item() < 2e-6


def test_matches_torch_float64_and_affine_grids():
    x, grid = random_case(2, 3, 8, 10, 9, 7, torch.float64, seed=3)
    assert (grid_sample(x, grid) - torch_grid_sample(x, grid)).abs().max().item() < 1e-12
    # Affine grids, as the augment pipe builds them (rotation + scale + shift, non-square).
    theta = torch.tensor([[[0.8, -0.5, 0.1], [0.45, 0.9, -0.2]], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]],
                         dtype=torch.float64)
    grid = F.affine_grid(theta, [2, 3, 12, 14], align_corners=False)
    assert (grid_sample(x, grid) - torch_grid_sample(x, grid)).abs().max().item() < 1e-12


def test_pixel_centres_and_outside():
    x = torch.arange(12, dtype=torch.float64).reshape(1, 1, 3, 4)
    h, w = 3, 4

    def at(px, py):  # normalised coordinates of pixel-centre position (px, py)
        return [(2 * px + 1) / w - 1, (2 * py + 1) / h - 1]

    pts = [at(0, 0), at(3, 2), at(1.5, 0), at(1, 0.5), at(-0.5, 1), at(-1, 1), at(4, 1), at(1, -3), at(100, 1e9)]
    grid = torch.tensor(pts, dtype=torch.float64).reshape(1, 1, len(pts), 2)
    out = grid_sample(x, grid).flatten().tolist()
    # Interior: bilinear between pixel centres; half a pixel outside: half the edge pixel (the other
    # tap reads the zero padding); a whole pixel or more outside: zero.
    expected = [0, 11, 1.5, 3, 0.5 * 4, 0, 0, 0, 0]
    assert out == pytest.approx(expected, abs=1e-12)
    # Half a pixel outside, the value fades to half (zero padding), as in torch.
    grid = torch.tensor(at(3.5, 1), dtype=torch.float64).reshape(1, 1, 1, 2)
    assert grid_sample(x, grid).item() == pytest.approx(0.5 * 7, abs=1e-12)


def test_nan_and_inf_coordinates_like_torch():
    x = torch.randn(1, 2, 4, 4)
    grid = torch.tensor([[[[float('nan'), 0.0], [0.0, float('nan')], [float('inf'), 0.0], [-1e30, 0.5],
                           [0.1, 0.2]]]])
    ref = torch_grid_sample(x, grid)
    out = grid_sample(x, grid)
    assert torch.equal(torch.isnan(out), torch.isnan(ref))
    finite = ~torch.isnan(ref)
    assert torch.allclose(out[finite], ref[finite], atol=1e-6)


def test_first_order_gradients_match_torch():
    x, grid = random_case(2, 3, 6, 7, 5, 4, torch.float64, seed=11, spread=1.2)
    go = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    grads = []
    for fn in (grid_sample, torch_grid_sample):
        xi, gi = x.clone().requires_grad_(), grid.clone().requires_grad_()
        grads.append(torch.autograd.grad(fn(xi, gi), [xi, gi], go))
    for ours, ref in zip(*grads):
        assert (ours - ref).abs().max().item() < 1e-10


@pytest.mark.parametrize('wrt', ['input', 'grid', 'both'])
def test_gradcheck_and_gradgradcheck(wrt):
    x, grid = random_case(2, 2, 4, 5, 3, 3, torch.float64, seed=5, spread=1.2)
    x.requires_grad_(wrt in ('input', 'both'))
    grid.requires_grad_(wrt in ('grid', 'both'))
    assert gradcheck(grid_sample, (x, grid))
    assert gradgradcheck(grid_sample, (x, grid))


def test_second_order_through_input_as_r1_uses_it():
    """d/dw of ||d/dx sum(tanh(w * sample(x)))||^2: the quantity R1 differentiates."""
    x, grid = random_case(1, 2, 5, 5, 4, 4, torch.float64, seed=2)
    x.requires_grad_()
    w = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)

    def penalty(w):
        y = torch.tanh(grid_sample(x, grid) * w).sum()
        (gx,) = torch.autograd.grad(y, x, create_graph=True)
        return gx.square().sum()

    assert gradcheck(penalty, (w,))


def test_bad_arguments():
    x = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match='input'):
        grid_sample(torch.zeros(3, 4, 4), torch.zeros(3, 2, 2, 2))
    with pytest.raises(ValueError, match='grid'):
        grid_sample(x, torch.zeros(2, 2, 2, 3))
    with pytest.raises(ValueError, match='batch'):
        grid_sample(x, torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError, match='dtype'):
        grid_sample(x, torch.zeros(2, 2, 2, 2, dtype=torch.float64))


def test_auto_impl_matches_reference_and_double_backward():
    torch.manual_seed(5)
    x = torch.randn(2, 3, 7, 9, requires_grad=True)
    grid = (torch.rand(2, 5, 6, 2) * 2.4 - 1.2).requires_grad_(True)
    out_auto = _grid_sample(x, grid)           # torch's kernel when it supports double backward
    out_ref = grid_sample(x, grid)
    assert (out_auto - out_ref).abs().max().item() < 1e-6
    grads = []
    for out in (out_auto, out_ref):
        (gx,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
        grads.append(torch.autograd.grad(gx.square().sum(), grid)[0])
    assert (grads[0] - grads[1]).abs().max().item() < 1e-4 * (1 + grads[1].abs().max().item())
    assert isinstance(native_double_backward_works(), bool)
    with pytest.raises(ValueError, match='impl'):
        _grid_sample(x, grid, impl='cuda')
