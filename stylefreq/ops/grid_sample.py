"""Bilinear ``grid_sample`` with gradients of any order, for R1 through geometric augmentation.

Why this exists. R1 regularisation differentiates D(augment(x)) with respect to the real image
``x`` *before* augmentation and then backpropagates through that gradient. With ADA's geometric
augmentations the pipe contains one bilinear resampling, so the training step needs the second
derivative of the resampling with respect to its input. For years ``F.grid_sample`` had none::

    RuntimeError: derivative for aten::grid_sampler_2d_backward is not implemented

(pytorch/pytorch#34704, still reported on torch 2.0). Upstream StyleGAN2-ADA worked around it with
a custom autograd function that only activates on torch 1.7-1.9 and silently falls back to
``F.grid_sample`` (and hence to that crash) on every later version (NVlabs/stylegan2-ada-pytorch
#195, #196, #223). Recent torch releases do register a double backward for ``grid_sampler_2d``
(torch 2.13 has one, for input and grid), but stylefreq supports older versions too and must give
the same numbers on all of them.

This module computes the same function from differentiable primitives (``floor`` on detached
coordinates, ``gather`` for the four neighbours, products with the bilinear weights), so autograd
provides first, second and higher derivatives with respect to both ``input`` and ``grid`` on any
torch version and device (``impl='ref'``). Where the installed torch's own kernel passes a one-time
double-backward probe, ``impl='auto'`` (the default) uses it instead: it computes the same function
(tests hold the two to 1e-6) and is far faster on CPU (about 90x for this op).

Semantics are those of ``F.grid_sample(input, grid, mode='bilinear', padding_mode='zeros',
align_corners=False)``: ``grid[n, i, j] = (x, y)`` in [-1, 1] addresses the *edges* of the image
(-1 is the left edge of the first pixel, +1 the right edge of the last one), and taps that fall
outside the image read zero. Outputs agree with ``F.grid_sample`` to float rounding: exactly the
same formula, but torch's CPU kernel apparently forms the coordinates with a fused multiply-add
(rounding ours that way closes most of the gap), so float32 results can differ in the last bits:
measured max 8.5e-7 on values of order 1 (float64: 1e-15).
"""

import torch
import torch.nn.functional as F

__all__ = ['grid_sample']


_native_ok = None


def native_double_backward_works() -> bool:
    """Whether this torch's ``F.grid_sample`` supports double backward (probed once, on the CPU)."""
    global _native_ok
    if _native_ok is None:
        try:
            # A private generator: the first call happens inside AugmentPipe, between its random
            # draws, and must not move the global RNG (that would change the augmentations).
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(1, 1, 3, 3, dtype=torch.float64, generator=gen, requires_grad=True)
            g = (torch.rand(1, 2, 2, 2, dtype=torch.float64, generator=gen) * 2 - 1).requires_grad_(True)
            y = F.grid_sample(x, g, mode='bilinear', padding_mode='zeros', align_corners=False)
            (dx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
            dx.square().sum().backward()
            _native_ok = x.grad is not None and g.grad is not None
        except RuntimeError:
            _native_ok = False
    return _native_ok


def grid_sample(input: torch.Tensor, grid: torch.Tensor, impl: str = 'auto') -> torch.Tensor:  # noqa: A002
    """Bilinear sampling of ``input`` [N, C, H, W] at ``grid`` [N, Ho, Wo, 2] -> [N, C, Ho, Wo].

    Equivalent to ``F.grid_sample(input, grid, mode='bilinear', padding_mode='zeros',
    align_corners=False)``, and twice (and more) differentiable with respect to ``input`` and
    ``grid``. ``impl``: 'ref' = the gather-based implementation below, 'auto' = torch's kernel when
    it supports double backward, else 'ref'.
    """
    if impl not in ('auto', 'ref'):
        raise ValueError(f"grid_sample: impl must be 'auto' or 'ref', got {impl!r}")
    if not isinstance(input, torch.Tensor) or input.ndim != 4:
        raise ValueError(f'grid_sample: input must be a 4-D [N, C, H, W] tensor, got '
                         f'{tuple(input.shape) if isinstance(input, torch.Tensor) else type(input).__name__}')
    if not isinstance(grid, torch.Tensor) or grid.ndim != 4 or grid.shape[-1] != 2:
        raise ValueError(f'grid_sample: grid must be a [N, Ho, Wo, 2] tensor, got '
                         f'{tuple(grid.shape) if isinstance(grid, torch.Tensor) else type(grid).__name__}')
    if grid.shape[0] != input.shape[0]:
        raise ValueError(f'grid_sample: input batch {input.shape[0]} != grid batch {grid.shape[0]}')
    if not input.is_floating_point() or input.dtype != grid.dtype:
        raise ValueError(f'grid_sample: input and grid must share one floating dtype, got '
                         f'{input.dtype} and {grid.dtype}')

    if impl == 'auto' and native_double_backward_works():
        return F.grid_sample(input, grid, mode='bilinear', padding_mode='zeros', align_corners=False)

    n, c, h, w = input.shape
    _, ho, wo, _ = grid.shape

    # Normalised [-1, 1] -> pixel-centre coordinates, both axes at once (align_corners=False:
    # pixel i covers [i - 0.5, i + 0.5], so -1 maps to -0.5 and +1 to size - 0.5).
    half_size = torch.tensor([w / 2, h / 2], dtype=grid.dtype, device=grid.device)
    xy = (grid + 1) * half_size - 0.5                                   # [N, Ho, Wo, 2]

    # The corner coordinates carry no gradient (floor is piecewise constant); the weights do.
    # NaN coordinates are sent outside the image, so they read zeros; their weights stay NaN,
    # which makes the output NaN exactly where F.grid_sample's is.
    xy0 = torch.floor(xy.detach()).nan_to_num(nan=-2.0)
    frac = xy - xy0                                                     # weight of the right/lower tap
    frac1 = 1 - frac                                                    # weight of the left/upper tap

    # Instead of masking out-of-range taps, the image gets a border of two zero pixels on every
    # side and the first tap coordinate is clamped to [-2, size]: a clamped pair of taps then
    # lies entirely in the border and reads exact zeros (their gradient lands in the border, which
    # F.pad's backward discards). Clamping in floating point, before the integer conversion, also
    # keeps huge coordinates from overflowing.
    low = torch.tensor([-2.0, -2.0], dtype=grid.dtype, device=grid.device)
    high = torch.tensor([float(w), float(h)], dtype=grid.dtype, device=grid.device)
    ixy = torch.maximum(torch.minimum(xy0, high), low).to(torch.int64) + 2
    stride = w + 4
    padded = F.pad(input, [2, 2, 2, 2]).reshape(n, c, (h + 4) * stride)
    top_left = (ixy[..., 1] * stride + ixy[..., 0]).reshape(n, 1, ho * wo)

    def tap(offset):
        return padded.gather(2, (top_left + offset).expand(n, c, ho * wo))

    fx, fy = frac[..., 0].reshape(n, 1, ho * wo), frac[..., 1].reshape(n, 1, ho * wo)
    gx, gy = frac1[..., 0].reshape(n, 1, ho * wo), frac1[..., 1].reshape(n, 1, ho * wo)
    # Same weights and summation order as torch's CPU kernel (nw, ne, sw, se).
    out = (tap(0) * (gy * gx)
           + tap(1) * (gy * fx)
           + tap(stride) * (fy * gx)
           + tap(stride + 1) * (fy * fx))
    return out.reshape(n, c, ho, wo)
