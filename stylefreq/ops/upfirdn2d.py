"""Upsample, FIR-filter, downsample: the resampling primitive of StyleGAN2.

For every channel independently, ``upfirdn2d`` computes

1. upsample by inserting ``up - 1`` zeros after every pixel (in x and y),
2. pad with zeros, or crop where a padding is negative,
3. convolve with the 2-D FIR filter ``f`` (a true convolution, i.e. the filter is
   mirrored, unless ``flip_filter=True``), keeping only the "valid" part,
4. downsample by keeping every ``down``-th pixel.

so the output height is ``(H * up + pad_y0 + pad_y1 - filter_h + down) // down``
(same for the width). Filters are prepared by ``setup_filter``; a 1-D filter is
applied separably (first along x, then along y).

The implementation is a zero insertion, ``F.pad`` (which also crops, for negative
amounts) and a depthwise ``F.conv2d`` whose stride performs step 4, so no pixel
that would be thrown away is ever computed. All steps are ordinary autograd ops,
hence gradients of any order.
"""

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

IntOrPair = Union[int, Sequence[int]]


def _parse_scaling(scaling: IntOrPair, name: str = 'scaling') -> Tuple[int, int]:
    """``int`` or ``[sx, sy]`` -> ``(sx, sy)``, each an int >= 1."""
    if isinstance(scaling, int):
        scaling = [scaling, scaling]
    if (not isinstance(scaling, (list, tuple)) or len(scaling) != 2
            or not all(isinstance(s, int) and s >= 1 for s in scaling)):
        raise ValueError(f'{name} must be an int >= 1 or a pair [x, y] of such ints, got {scaling!r}')
    sx, sy = scaling
    return sx, sy


def _parse_padding(padding: IntOrPair) -> Tuple[int, int, int, int]:
    """``int``, ``[px, py]`` or ``[px0, px1, py0, py1]`` -> ``(px0, px1, py0, py1)``.

    Order is x (left, right) then y (top, bottom), which is also ``F.pad``'s order
    for an NCHW tensor.
    """
    if isinstance(padding, int):
        padding = [padding, padding]
    if (not isinstance(padding, (list, tuple)) or len(padding) not in (2, 4)
            or not all(isinstance(p, int) for p in padding)):
        raise ValueError(f'padding must be an int, [x, y] or [x0, x1, y0, y1] of ints, got {padding!r}')
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    px0, px1, py0, py1 = padding
    return px0, px1, py0, py1


def _get_filter_size(f: Optional[torch.Tensor]) -> Tuple[int, int]:
    """Return ``(width, height)`` of a filter from ``setup_filter`` (``None`` -> 1x1)."""
    if f is None:
        return 1, 1
    if not isinstance(f, torch.Tensor) or f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f'filter must be None or a non-empty 1-D or 2-D tensor, got '
                         f'{tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__}')
    fw = int(f.shape[-1])
    fh = int(f.shape[0])  # a 1-D (separable) filter is square: fh == fw
    return fw, fh


def setup_filter(
    f,
    device: torch.device = torch.device('cpu'),
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1,
    separable: Optional[bool] = None,
) -> torch.Tensor:
    """Turn filter taps into the float32 tensor ``upfirdn2d`` expects.

    Args:
        f:           Taps: ``None`` (identity, ``[1]``), a scalar, a 1-D or a 2-D array-like.
        device:      Device of the returned tensor.
        normalize:   Scale so that the (2-D equivalent) filter sums to 1.
        flip_filter: Mirror the filter (turns the convolution into a correlation).
        gain:        Overall signal gain; each of the ``ndim`` filter axes gets ``gain ** (1/ndim)``.
        separable:   Keep a 1-D filter 1-D (applied once along x and once along y).
                     ``None`` decides by size: separable iff 1-D with at least 8 taps,
                     because a small outer-product filter is cheaper as one 2-D pass.

    Returns:
        float32 tensor, 1-D if separable else 2-D (a 1-D non-separable input becomes
        the outer product ``f[:, None] * f[None, :]``).
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim not in (0, 1, 2) or f.numel() == 0:
        raise ValueError(f'setup_filter: f must be a non-empty scalar, 1-D or 2-D array, got shape {tuple(f.shape)}')
    if f.ndim == 0:
        f = f.reshape(1)
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if separable and f.ndim != 1:
        raise ValueError(f'setup_filter: separable=True needs a 1-D filter, got shape {tuple(f.shape)}')

    # Out-of-place throughout: the caller's array is never modified.
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device)


def upfirdn2d(
    x: torch.Tensor,
    f: Optional[torch.Tensor],
    up: IntOrPair = 1,
    down: IntOrPair = 1,
    padding: IntOrPair = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = 'ref',
) -> torch.Tensor:
    """Upsample, pad/crop, FIR-filter and downsample each channel of ``x``.

    Args:
        x:           ``[N, C, H, W]`` input.
        f:           Filter from ``setup_filter``: 2-D ``[fh, fw]``, 1-D ``[fw]`` (separable),
                     or ``None`` for the 1x1 identity.
        up:          Upsampling factor, int or ``[x, y]``.
        down:        Downsampling factor, int or ``[x, y]``.
        padding:     Padding of the *upsampled* image, int, ``[x, y]`` or ``[x0, x1, y0, y1]``;
                     negative values crop.
        flip_filter: ``False`` = true convolution, ``True`` = correlation.
        gain:        Signal gain (applied to the filter).
        impl:        ``'ref'`` or ``'cuda'``; accepted for compatibility, both run this code.

    Returns:
        ``[N, C, (H*upy + py0 + py1 - fh + downy) // downy, (W*upx + px0 + px1 - fw + downx) // downx]``.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f'upfirdn2d: x must be a 4-D [N, C, H, W] tensor, got '
                         f'{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}')
    if impl not in ('ref', 'cuda'):
        raise ValueError(f"upfirdn2d: impl must be 'ref' or 'cuda', got {impl!r}")
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    fw, fh = _get_filter_size(f)
    upx, upy = _parse_scaling(up, 'up')
    downx, downy = _parse_scaling(down, 'down')
    px0, px1, py0, py1 = _parse_padding(padding)

    batch, channels, height, width = x.shape
    padded_h = height * upy + py0 + py1
    padded_w = width * upx + px0 + px1
    if padded_h < fh or padded_w < fw:
        raise ValueError(f'upfirdn2d: a {height}x{width} input upsampled by ({upx}, {upy}) and padded by '
                         f'{[px0, px1, py0, py1]} is {max(padded_h, 0)}x{max(padded_w, 0)}, '
                         f'smaller than the {fh}x{fw} filter')

    # 1. Zero insertion: pixel (i, j) goes to (i * upy, j * upx); the image keeps its
    # trailing zeros so that it is exactly H*upy x W*upx before padding.
    if upx > 1 or upy > 1:
        upsampled = x.new_zeros([batch, channels, height * upy, width * upx])
        upsampled[:, :, ::upy, ::upx] = x
        x = upsampled

    # 2. Pad, then crop. F.pad crops for negative amounts, but a crop larger than the
    # unpadded side fails, so the positive amounts must go first (a side may be
    # cropped into the padding of the opposite side: the result is still defined).
    pad = [px0, px1, py0, py1]  # F.pad order: last dim (x) first, as in `padding`
    if any(p > 0 for p in pad):
        x = F.pad(x, [max(p, 0) for p in pad])
    if any(p < 0 for p in pad):
        x = F.pad(x, [min(p, 0) for p in pad])

    # 3 + 4. conv2d computes a correlation, so the taps are mirrored to obtain a true
    # convolution. The stride implements the decimation (output pixel o reads the
    # window starting at o*down, exactly the pixel that slicing ::down would keep).
    f = f.to(device=x.device, dtype=x.dtype)
    f = f * (gain ** (f.ndim / 2))
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        weight = f.expand(channels, 1, fh, fw).contiguous()
        x = F.conv2d(x, weight, stride=(downy, downx), groups=channels)
    else:
        weight_x = f.reshape(1, 1, 1, fw).expand(channels, 1, 1, fw).contiguous()
        weight_y = f.reshape(1, 1, fh, 1).expand(channels, 1, fh, 1).contiguous()
        x = F.conv2d(x, weight_x, stride=(1, downx), groups=channels)
        x = F.conv2d(x, weight_y, stride=(downy, 1), groups=channels)
    return x


def filter2d(
    x: torch.Tensor,
    f: Optional[torch.Tensor],
    padding: IntOrPair = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = 'ref',
) -> torch.Tensor:
    """Filter without resampling; the output has the input's size (plus ``padding``).

    The filter is centred: for an even size the extra tap of padding goes to the
    left/top.
    """
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    pad = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(
    x: torch.Tensor,
    f: Optional[torch.Tensor],
    up: IntOrPair = 2,
    padding: IntOrPair = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = 'ref',
) -> torch.Tensor:
    """Upsample by ``up`` with filter ``f``; output is ``up`` times the input size (plus ``padding``).

    The gain is multiplied by ``upx * upy`` because zero insertion leaves only one
    non-zero pixel in every ``upx * upy`` block, and a filter normalised to sum 1
    would otherwise darken the image by that factor.
    """
    upx, upy = _parse_scaling(up, 'up')
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    # The two amounts of each axis add up to (filter size - 1), so the size stays
    # H * up; the leading side gets the larger share, which centres the filter on the
    # up x up block each input pixel turns into rather than on the block's first pixel.
    pad = [
        px0 + (fw + upx - 1) // 2,
        px1 + (fw - upx) // 2,
        py0 + (fh + upy - 1) // 2,
        py1 + (fh - upy) // 2,
    ]
    return upfirdn2d(x, f, up=up, padding=pad, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(
    x: torch.Tensor,
    f: Optional[torch.Tensor],
    down: IntOrPair = 2,
    padding: IntOrPair = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = 'ref',
) -> torch.Tensor:
    """Filter with ``f`` and downsample by ``down``; output is the input size (plus ``padding``) / ``down``."""
    downx, downy = _parse_scaling(down, 'down')
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    pad = [
        px0 + (fw - downx + 1) // 2,
        px1 + (fw - downx) // 2,
        py0 + (fh - downy + 1) // 2,
        py1 + (fh - downy) // 2,
    ]
    return upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)
