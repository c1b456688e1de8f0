"""FIR resampling of image batches: upsample, pad, filter, downsample.

``upfirdn2d(x, f, up, down, padding)`` treats every channel of every image on its own:

1. upsample by zero insertion (sample ``x[i, j]`` goes to ``(i * up_y, j * up_x)``, the
   ``up - 1`` zeros follow each sample, the last one included);
2. pad with zeros on the four sides (a negative amount crops instead); padding is counted in
   pixels of the upsampled image;
3. filter with ``gain * f`` in valid mode, as a true convolution (a correlation when
   ``flip_filter=True``); a 1-D filter is separable and runs as a horizontal and a vertical
   pass, each scaled by ``sqrt(gain)``;
4. keep every ``down``-th pixel, starting with the first.

The output is ``(H * up_y + pad_y0 + pad_y1 - f_h) // down_y + 1`` rows high (columns alike).

Float results. The zero-inserted, padded image is convolved depthwise by ``F.conv2d`` with the
kernel ``gain * f`` rounded to the input dtype, which fixes the rounding of every output pixel.
Three shortcuts leave every bit of that result unchanged (checked on the CPU against
StyleGAN2-ADA's reference path) and are taken whenever they apply: the decimation is the
convolution's stride (the skipped pixels are never computed), the padding common to both sides
of an axis is the convolution's implicit zero padding (no padded copy), and a one-tap filter is
a scalar multiply (skipped when it is 1). Upsampling writes the samples straight into a zero
canvas that already carries the padding. Only ordinary differentiable torch ops are used, so
autograd supplies gradients of any order on any device; the filter never receives a gradient.

On CUDA, StyleGAN2-ADA runs a plugin kernel instead, which accumulates in float32 over the real
(not inserted) samples only and applies the gain at the end; results there differ from this
module's in the last bits (for float16 input, by float16 rounding).
"""

import numbers
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

__all__ = ['setup_filter', 'upfirdn2d', 'filter2d', 'upsample2d', 'downsample2d']

IntPair = Union[int, Sequence[int]]
Padding = Union[int, Sequence[int]]

# ---------------------------------------------------------------------------------------------------
# Filters


def setup_filter(f, device=torch.device('cpu'), normalize=True, flip_filter=False, gain=1, separable=None):
    """Turn a list of taps (or a 2-D array) into the float32 filter tensor the resamplers expect.

    Args:
        f:           Taps: ``None`` (the one-tap identity), a scalar, a 1-D or a 2-D array-like.
        device:      Device of the result.
        normalize:   Divide by the sum of all taps, so that a flat image stays flat.
        flip_filter: Reverse every axis.
        gain:        Overall signal gain; a 2-D filter is multiplied by ``gain``, a separable
                     one by ``sqrt(gain)`` (it is applied twice).
        separable:   Keep a 1-D filter 1-D (``True``) or expand it to its outer product
                     (``False``); ``None`` keeps 1-D filters of eight or more taps separable.

    Returns:
        float32 tensor ``[f_h, f_w]`` or, when separable, ``[taps]``.
    """
    # Built on the CPU whatever the ambient default device (checkpoints construct networks on 'meta').
    taps = torch.as_tensor(1 if f is None else f, dtype=torch.float32, device='cpu')
    if taps.ndim == 0:
        taps = taps.reshape(1)
    if taps.ndim > 2 or taps.numel() == 0:
        raise ValueError(f'setup_filter: f must be a non-empty 1-D or 2-D array of taps, got shape {list(taps.shape)}.')
    separable = (taps.ndim == 1 and taps.numel() >= 8) if separable is None else bool(separable)
    if separable and taps.ndim != 1:
        raise ValueError(f'setup_filter: separable=True needs a 1-D list of taps, got a {taps.ndim}-D filter.')
    if taps.ndim == 1 and not separable:
        taps = torch.outer(taps, taps)
    if normalize and float(taps.sum()) == 0:
        raise ValueError('setup_filter: cannot normalize a filter whose taps sum to zero; pass normalize=False.')
    taps = taps / taps.sum() if normalize else taps
    taps = taps.flip(list(range(taps.ndim))) if flip_filter else taps
    taps = taps * (gain ** (taps.ndim / 2))  # per-pass share of the gain: gain for 2-D, sqrt(gain) for 1-D
    return taps.to(device)


def _filter_hw(f: Optional[torch.Tensor]) -> Tuple[int, int]:
    """(height, width) of a filter; a separable one is square, the identity (None) is 1x1."""
    shape = [1, 1] if f is None else list(f.shape)
    return shape[0], shape[-1]


# ---------------------------------------------------------------------------------------------------
# Argument checks. Each returns the normalised value or raises a one-sentence ValueError.


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _factor_xy(value: IntPair, name: str, op: str) -> Tuple[int, int]:
    """A resampling factor as (x, y): an int or a pair of positive ints."""
    items = [value, value] if _is_int(value) else list(value) if isinstance(value, (list, tuple)) else None
    if items is None or len(items) != 2 or not all(_is_int(v) and v >= 1 for v in items):
        raise ValueError(f'{op}: {name} must be a positive integer or a pair [x, y] of them, got {value!r}.')
    return int(items[0]), int(items[1])


def _padding_x0x1y0y1(value: Padding, op: str) -> Tuple[int, int, int, int]:
    """Padding as (left, right, top, bottom) from an int, [x, y] or [x0, x1, y0, y1]."""
    if _is_int(value):
        return (int(value),) * 4
    items = list(value) if isinstance(value, (list, tuple)) else []
    if not all(_is_int(v) for v in items) or len(items) not in (2, 4):
        raise ValueError(f'{op}: padding must be an int, [x, y] or [x0, x1, y0, y1] of ints, got {value!r}.')
    if len(items) == 2:
        items = [items[0], items[0], items[1], items[1]]
    return tuple(int(v) for v in items)


def _check_images(x, op: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        got = f'a {x.ndim}-D {x.dtype} tensor' if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f'{op}: x must be a 4-D floating-point tensor [N, C, H, W], got {got}.')


def _check_impl(impl, op: str) -> None:
    if impl not in ('ref', 'cuda'):
        raise ValueError(f"{op}: impl must be 'ref' or 'cuda' (both run the same torch code), got {impl!r}.")


def _check_filter(f, op: str) -> Optional[torch.Tensor]:
    usable = isinstance(f, torch.Tensor) and f.ndim in (1, 2) and f.is_floating_point() and f.numel() > 0
    if f is not None and not usable:
        got = f'{f.ndim}-D {f.dtype} tensor' if isinstance(f, torch.Tensor) else type(f).__name__
        raise ValueError(f'{op}: filter f must be None or a floating 1-D or 2-D tensor from setup_filter, got a {got}.')
    return None if f is None else f.detach()  # the filter is a constant: it never gets a gradient


# ---------------------------------------------------------------------------------------------------
# The resampler


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Upsample, pad, FIR-filter and downsample a batch of images (see the module docstring).

    Args:
        x:           Images ``[N, C, H, W]`` (any float dtype, any memory format).
        f:           Filter from ``setup_filter``: float ``[f_h, f_w]``, separable ``[taps]``,
                     or ``None`` for the identity.
        up:          Upsampling factor, int or ``[x, y]``.
        down:        Downsampling factor, int or ``[x, y]``.
        padding:     Int, ``[x, y]`` or ``[x0, x1, y0, y1]``, in upsampled pixels; negative crops.
        flip_filter: ``False``: convolution with ``f``; ``True``: correlation.
        gain:        Overall signal gain.
        impl:        Accepted for compatibility with StyleGAN2-ADA; there is a single
                     torch-native implementation.

    Returns:
        Tensor ``[N, C, H_out, W_out]`` in ``x``'s dtype.
    """
    _check_images(x, 'upfirdn2d')
    _check_impl(impl, 'upfirdn2d')
    f = _check_filter(f, 'upfirdn2d')
    up_xy = _factor_xy(up, 'up', 'upfirdn2d')
    down_xy = _factor_xy(down, 'down', 'upfirdn2d')
    pads = _padding_x0x1y0y1(padding, 'upfirdn2d')
    return _upfirdn(x, f, up_xy, down_xy, pads, bool(flip_filter), gain)


def _upfirdn(x, f, up_xy, down_xy, pads, flip_filter, gain):
    fh, fw = _filter_hw(f)
    (upx, upy), (downx, downy) = up_xy, down_xy
    left, right, top, bottom = pads
    span_h = x.shape[2] * upy + top + bottom
    span_w = x.shape[3] * upx + left + right
    if span_h < fh or span_w < fw:
        raise ValueError(f'upfirdn2d: the upsampled, padded input ({span_h}x{span_w}) is smaller than the '
                         f'{fh}x{fw} filter, so there is no output pixel.')

    # Padding shared by both sides of an axis goes to the convolution, which never materialises
    # it; a one-tap filter is no convolution, so there everything is explicit.
    share_y = max(min(top, bottom), 0) if fh > 1 else 0
    share_x = max(min(left, right), 0) if fw > 1 else 0
    canvas_pads = (left - share_x, right - share_x, top - share_y, bottom - share_y)
    if upx > 1 or upy > 1:
        x = _zero_insert(x, upx, upy, canvas_pads)
    elif any(canvas_pads):
        x = F.pad(x, canvas_pads)  # negative amounts crop

    taps = torch.ones([1, 1]) if f is None else f  # on the CPU: reading its value needs no device sync
    if taps.ndim == 1:
        # Separable: the horizontal pass computes the kept columns only, the vertical pass the kept rows.
        kernel = _conv_kernel(taps, gain ** 0.5, flip_filter, x.dtype)
        x = _depthwise(x, kernel[None, :], (0, share_x), (1, downx))
        return _depthwise(x, kernel[:, None], (share_y, 0), (downy, 1))
    kernel = _conv_kernel(taps, gain, flip_filter, x.dtype)
    return _depthwise(x, kernel, (share_y, share_x), (downy, downx))


def _conv_kernel(f: torch.Tensor, gain, flip_filter: bool, dtype: torch.dtype) -> torch.Tensor:
    """The kernel handed to F.conv2d: gain applied in the filter's precision, then cast to x's dtype.

    F.conv2d correlates, so a true convolution needs the taps reversed.
    """
    scaled = f * gain
    oriented = scaled if flip_filter else scaled.flip(list(range(scaled.ndim)))
    return oriented.to(dtype)


def _depthwise(x: torch.Tensor, kernel: torch.Tensor, conv_padding: Tuple[int, int],
               stride: Tuple[int, int]) -> torch.Tensor:
    """Correlate every channel of x with the same 2-D kernel (valid mode plus conv_padding)."""
    if kernel.numel() == 1:
        # A 1x1 depthwise convolution is a scalar multiply, and the same float product.
        if kernel.item() != 1:
            x = x * kernel.reshape([])  # a 0-d CPU tensor may scale a tensor on any device
        return x[:, :, ::stride[0], ::stride[1]]
    channels = x.shape[1]
    weight = kernel.to(x.device)[None, None].expand(channels, 1, *kernel.shape).contiguous()
    return F.conv2d(x, weight, stride=stride, padding=conv_padding, groups=channels)


def _zero_insert(x: torch.Tensor, upx: int, upy: int, pads: Tuple[int, int, int, int]) -> torch.Tensor:
    """Upsample by zero insertion and pad/crop in one step: one zero canvas, one strided copy."""
    left, right, top, bottom = pads
    rows_dst, rows_src, height = _sample_positions(x.shape[2], upy, top, bottom)
    cols_dst, cols_src, width = _sample_positions(x.shape[3], upx, left, right)
    sparse = x.new_zeros([x.shape[0], x.shape[1], height, width])
    sparse[:, :, rows_dst, cols_dst] = x[:, :, rows_src, cols_src]
    return sparse


def _sample_positions(size: int, factor: int, before: int, after: int) -> Tuple[slice, slice, int]:
    """Along one axis: where the input samples land in the padded, zero-inserted canvas.

    Sample i lands at ``before + i * factor``; samples outside ``[0, length)`` are cropped away.
    Returns (canvas slice, input slice, canvas length).
    """
    length = size * factor + before + after
    first = max(0, -(before // factor))  # ceil(-before / factor), clipped at the first sample
    stop = min(size, (length - 1 - before) // factor + 1)  # one past the last sample inside
    count = max(stop - first, 0)
    start = before + first * factor
    return slice(start, start + count * factor, factor), slice(first, first + count), length


# ---------------------------------------------------------------------------------------------------
# Convenience wrappers with centred padding


def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Filter without resampling; the output is as large as the input (plus ``padding``)."""
    return _centred_upfirdn(x, f, 1, 1, padding, flip_filter, gain, impl, 'filter2d')


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Upsample by ``up`` (int or ``[x, y]``) with an interpolation filter.

    The zero insertion leaves one sample in ``up_x * up_y``, so the gain grows by that factor
    to keep the mean brightness.
    """
    return _centred_upfirdn(x, f, up, 1, padding, flip_filter, gain, impl, 'upsample2d')


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Low-pass filter and downsample by ``down`` (int or ``[x, y]``)."""
    return _centred_upfirdn(x, f, 1, down, padding, flip_filter, gain, impl, 'downsample2d')


def _centred_upfirdn(x, f, up, down, padding, flip_filter, gain, impl, op):
    """upfirdn2d with the padding that keeps the image centred, added to the caller's padding.

    With ``t`` taps along an axis the centring is ``((t + u - d) // 2, (t - u - d + 1) // 2)``
    before/after for upsampling by ``u`` or downsampling by ``d`` (one of the two is 1); for
    ``u = d = 1`` it is the "same" padding of a plain filter. The output is then exactly
    ``u`` times larger or ``d`` times smaller than the input.
    """
    f = _check_filter(f, op)
    (upx, upy), (downx, downy) = _factor_xy(up, 'up', op), _factor_xy(down, 'down', op)
    taps_y, taps_x = _filter_hw(f)
    centring = ((taps_x + upx - downx) // 2, (taps_x - upx - downx + 1) // 2,
                (taps_y + upy - downy) // 2, (taps_y - upy - downy + 1) // 2)
    total = [mine + extra for mine, extra in zip(_padding_x0x1y0y1(padding, op), centring)]
    return upfirdn2d(x, f, up=[upx, upy], down=[downx, downy], padding=total, flip_filter=flip_filter,
                     gain=gain * upx * upy, impl=impl)
