"""Convolution combined with FIR upsampling or downsampling: StyleGAN2's resampling layers.

What the result equals. The user padding ``(x0, x1, y0, y1)`` is counted in pixels of the
upsampled image and is applied once, at the start, together with the centring amounts of
``upsample2d`` (when ``up > 1``) and ``downsample2d`` (when ``down > 1``). Then

    y = D( K( upfirdn2d(x, f if up > 1 else identity, up=up, padding=P, gain=up**2) ) )

with ``K`` the valid grouped convolution by ``w`` (a correlation, as ``F.conv2d``, when
``flip_weight=True``; a true convolution otherwise) and ``D`` the FIR downsampler
``upfirdn2d(., f, down=down)`` when ``down > 1``.

How it is evaluated. Each layer shape has its cheapest equivalent order. The order also fixes
the float rounding; it is the order of StyleGAN2-ADA's reference path, so float32 results on the
CPU match that path bit for bit (tests/test_ops.py holds the network cases to it):

* 1x1 kernel, downsampling only: filter and decimate first, then the 1x1 convolution;
* 1x1 kernel, upsampling only: the 1x1 convolution on the small image, then the FIR upsampler;
* downsampling only: filter at full resolution, then a strided convolution;
* upsampling: a transposed convolution with stride ``up`` (it never multiplies inserted zeros),
  then the FIR filter with gain ``up**2`` on what the transposed convolution produced, then the
  FIR downsampler if ``down > 1`` as well;
* no resampling, padding the same on both sides of each axis: a single ``F.conv2d``;
* anything else: the formula above, step by step.

Upstream also computes small 1x1 convolutions of channels_last inputs as a matrix product, a
memory-format speed trick; it is not reproduced, which can move the last float bit there.
"""

import numbers

import torch
import torch.nn.functional as F

from . import upfirdn2d as _fir

__all__ = ['conv2d_resample']


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False):
    """Grouped 2-D convolution with optional FIR upsampling and downsampling.

    Args:
        x:           Input ``[N, C_in, H, W]``.
        w:           Weight ``[C_out, C_in // groups, k_h, k_w]``, same dtype as ``x``.
        f:           Resampling filter from ``upfirdn2d.setup_filter``, or ``None`` (identity).
        up:          Integer upsampling factor.
        down:        Integer downsampling factor.
        padding:     Int, ``[x, y]`` or ``[x0, x1, y0, y1]``, in upsampled pixels.
        groups:      Number of convolution groups.
        flip_weight: ``True``: correlate with ``w`` (``F.conv2d``); ``False``: convolve.
        flip_filter: ``False``: convolve with ``f``; ``True``: correlate.

    Returns:
        Tensor ``[N, C_out, H_out, W_out]`` in ``x``'s dtype.
    """
    _check_operands(x, w, groups)
    f = _fir._check_filter(f, 'conv2d_resample')
    up = _positive_int(up, 'up')
    down = _positive_int(down, 'down')
    fh, fw = _fir._filter_hw(f)
    kh, kw = w.shape[2], w.shape[3]
    user_pads = _fir._padding_x0x1y0y1(padding, 'conv2d_resample')
    pads = _add_centring(user_pads, (fh, fw), up, down)
    left, right, top, bottom = pads
    _check_output_exists(x, (kh, kw), (fh, fw), up, down, pads)
    flip_filter = bool(flip_filter)

    if kh == 1 and kw == 1 and down > 1 and up == 1:
        x = _fir._upfirdn(x, f, (1, 1), (down, down), pads, flip_filter, 1)
        return _correlate(x, w, groups, flip_weight)
    if kh == 1 and kw == 1 and up > 1 and down == 1:
        x = _correlate(x, w, groups, flip_weight)
        return _fir._upfirdn(x, f, (up, up), (1, 1), pads, flip_filter, up * up)
    if up > 1:
        return _transposed_then_filter(x, w, f, up, down, pads, groups, flip_weight, flip_filter)
    if down > 1:
        x = _fir._upfirdn(x, f, (1, 1), (1, 1), pads, flip_filter, 1)
        return _correlate(x, w, groups, flip_weight, stride=down)
    if left == right >= 0 and top == bottom >= 0:
        return _correlate(x, w, groups, flip_weight, padding=(top, left))
    x = _fir._upfirdn(x, None, (1, 1), (1, 1), pads, flip_filter, 1)
    return _correlate(x, w, groups, flip_weight)


def _correlate(x, w, groups, flip_weight, stride=1, padding=0):
    """The convolution K: F.conv2d correlates, so a true convolution rotates the kernel first."""
    kernel = w if flip_weight or w.shape[2] * w.shape[3] == 1 else _rotate180(w)
    return F.conv2d(x, kernel, stride=stride, padding=padding, groups=groups)


def _rotate180(w):
    """Turn the spatial taps of a weight [.., .., k_h, k_w] upside down: correlation <-> convolution."""
    return w.flip(dims=(-2, -1))


def _transposed_then_filter(x, w, f, up, down, pads, groups, flip_weight, flip_filter):
    """Upsampling layers: transposed convolution, FIR with gain up**2, optional FIR downsampler.

    ``conv_transpose2d`` scatters every input sample through the kernel, which is the true
    convolution of the zero-inserted image (without its trailing zeros) in "full" mode. Full mode
    is valid mode padded by ``k - 1`` on both sides, less the ``up - 1`` trailing zeros at the far
    end, so the FIR stage receives the user padding minus those amounts.
    """
    kh, kw = w.shape[2], w.shape[3]
    left, right, top, bottom = pads
    left, right = left - (kw - 1), right - (kw - up)
    top, bottom = top - (kh - 1), bottom - (kh - up)
    # Cropping on both sides of an axis is cheaper inside the transposed convolution.
    crop_x = max(min(-left, -right), 0)
    crop_y = max(min(-top, -bottom), 0)
    left, right, top, bottom = left + crop_x, right + crop_x, top + crop_y, bottom + crop_y

    # conv_transpose2d wants [C_in, C_out // groups, k_h, k_w]: swap the two channel roles per group.
    c_out, c_in_per_group = w.shape[0], w.shape[1]
    w = w.reshape(groups, c_out // groups, c_in_per_group, kh, kw).transpose(1, 2)
    w = w.reshape(groups * c_in_per_group, c_out // groups, kh, kw)
    if flip_weight:  # the scatter convolves; a correlation needs the rotated kernel
        w = _rotate180(w)
    x = F.conv_transpose2d(x, w, stride=up, padding=(crop_y, crop_x), groups=groups)
    x = _fir._upfirdn(x, f, (1, 1), (1, 1), (left, right, top, bottom), flip_filter, up * up)
    return x if down == 1 else _fir._upfirdn(x, f, (1, 1), (down, down), (0, 0, 0, 0), flip_filter, 1)


def _add_centring(pads, filter_hw, up, down):
    """User padding plus the amounts that centre upsample2d (up > 1) and downsample2d (down > 1)."""
    (left, right, top, bottom), (fh, fw) = pads, filter_hw
    if up > 1:
        left, right = left + (fw + up - 1) // 2, right + (fw - up) // 2
        top, bottom = top + (fh + up - 1) // 2, bottom + (fh - up) // 2
    if down != 1:
        left, right = left + (fw - down + 1) // 2, right + (fw - down) // 2
        top, bottom = top + (fh - down + 1) // 2, bottom + (fh - down) // 2
    return left, right, top, bottom


# ---------------------------------------------------------------------------------------------------
# Argument checks (one-sentence ValueErrors)


def _positive_int(value, name):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f'conv2d_resample: {name} must be a positive integer, got {value!r}.')
    return int(value)


def _check_operands(x, w, groups):
    for name, t in (('x', x), ('w', w)):
        if not isinstance(t, torch.Tensor) or t.ndim != 4:
            got = f'shape {list(t.shape)}' if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f'conv2d_resample: {name} must be a 4-D tensor, got {got}.')
    if w.dtype != x.dtype:
        raise ValueError(f'conv2d_resample: w has dtype {w.dtype} but x has {x.dtype}; cast the weight first.')
    if not isinstance(groups, numbers.Integral) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f'conv2d_resample: groups must be a positive integer, got {groups!r}.')
    if x.shape[1] != w.shape[1] * groups or w.shape[0] % groups != 0:
        raise ValueError(f'conv2d_resample: with groups={groups}, w of shape {list(w.shape)} needs '
                         f'{w.shape[1] * groups} input channels and a multiple of {groups} output '
                         f'channels, but x has {x.shape[1]} channels.')


def _check_output_exists(x, kernel_hw, filter_hw, up, down, pads):
    """Raise if some stage of the chain would have nothing to work on."""
    left, right, top, bottom = pads
    for size, k, taps, before, after in ((x.shape[2], kernel_hw[0], filter_hw[0], top, bottom),
                                         (x.shape[3], kernel_hw[1], filter_hw[1], left, right)):
        size = size * up + before + after - (taps - 1 if up > 1 else 0)  # after the upsampler
        size -= k - 1                                                    # after the convolution
        size -= taps - 1 if down != 1 else 0                             # after the downsampling filter
        if size < 1:
            raise ValueError(f'conv2d_resample: input {list(x.shape[2:])} is too small for a {list(kernel_hw)} '
                             f'kernel, a {list(filter_hw)} filter and padding {list(pads)}: no output pixel.')
