"""2-D convolution with optional FIR-filtered upsampling and downsampling.

``conv2d_resample(x, w, f, up, down, padding)`` is defined by the reference chain

1. ``upfirdn2d(x, f, up=up, padding=P, gain=up**2)`` (only the padding if ``up == 1``),
2. ``conv2d(., w, groups=groups)`` (a correlation if ``flip_weight`` else a convolution),
3. ``upfirdn2d(., f, down=down)`` if ``down > 1``,

where ``P`` is the user's ``padding`` (given w.r.t. the upsampled image, applied once)
plus the centring that ``upsample2d``/``downsample2d`` would add for a filter of this
size. Filtering, zero padding, zero insertion and convolution are linear and shift
invariant, so the order of the passes can be changed; the implementation picks the
cheapest order for each case:

- ``up > 1``:                a stride-``up`` transposed convolution does zero insertion and
                             the ``w`` pass at once, then the ``f`` pass (and step 3 if ``down > 1``);
                             with a 1x1 kernel and no ``down``, the conv simply runs first on the
                             small image, then ``upfirdn2d`` upsamples.
- ``down > 1``, 1x1 kernel:  filter and decimate first, then the (cheap) 1x1 conv.
- ``down > 1``:              filter first, then a stride-``down`` conv (decimation for free).
- neither:                   plain ``conv2d`` (padding done by ``F.pad`` if it is asymmetric
                             or negative).

All of them agree with the reference chain up to float rounding (tested).
"""

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from . import upfirdn2d as _fir

IntOrSeq = Union[int, Sequence[int]]


def _conv2d(x: torch.Tensor, w: torch.Tensor, stride: int = 1, padding=0, groups: int = 1,
            flip_weight: bool = True) -> torch.Tensor:
    # F.conv2d is a correlation; mirroring the kernel turns it into a convolution.
    if not flip_weight:
        w = w.flip([2, 3])
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def _upsample_conv2d(x: torch.Tensor, w: torch.Tensor, up: int, groups: int, flip_weight: bool,
                     pad_x0: int, pad_x1: int, pad_y0: int, pad_y1: int):
    """Zero-insert by ``up``, pad, and apply ``w`` through one transposed convolution.

    The transposed convolution with stride ``up`` returns the *full* true convolution
    of the zero-inserted image (without its trailing up - 1 zeros) with its kernel.
    Compared with the reference "pad by (p0, p1), then valid pass of w", that full
    output already covers k - 1 pixels of leading padding, and its trailing side
    covers k - 1 pixels after the last input pixel where the zero-inserted image
    ends up - 1 after it. Returns the result and the padding still to be applied
    (by the following ``f`` pass): ``(p0 - (k - 1), p1 - (k - up))`` per axis.
    """
    out_channels, in_per_group, kh, kw = w.shape

    # conv2d weights are [out, in/groups, kh, kw]; conv_transpose2d wants
    # [in, out/groups, kh, kw], i.e. in/out swapped within each group.
    out_per_group = out_channels // groups
    wt = w.reshape(groups, out_per_group, in_per_group, kh, kw).transpose(1, 2)
    wt = wt.reshape(groups * in_per_group, out_per_group, kh, kw)
    # conv_transpose2d is a true convolution with its kernel, so the kernel is
    # mirrored when the requested operation is a correlation (flip_weight=True).
    if flip_weight:
        wt = wt.flip([2, 3])

    rem_x0, rem_x1 = pad_x0 - (kw - 1), pad_x1 - (kw - up)
    rem_y0, rem_y1 = pad_y0 - (kh - 1), pad_y1 - (kh - up)
    # Where both sides of an axis are to be cropped, let conv_transpose2d crop the
    # common amount (its `padding` argument), so those pixels are never computed.
    crop_x = max(min(-rem_x0, -rem_x1), 0)
    crop_y = max(min(-rem_y0, -rem_y1), 0)
    x = F.conv_transpose2d(x, wt, stride=up, padding=[crop_y, crop_x], groups=groups)
    return x, [rem_x0 + crop_x, rem_x1 + crop_x, rem_y0 + crop_y, rem_y1 + crop_y]


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: Optional[torch.Tensor] = None,
    up: int = 1,
    down: int = 1,
    padding: IntOrSeq = 0,
    groups: int = 1,
    flip_weight: bool = True,
    flip_filter: bool = False,
) -> torch.Tensor:
    """Convolve ``x`` with ``w``, optionally upsampling/downsampling with FIR filter ``f``.

    Args:
        x:           ``[N, C_in, H, W]`` input.
        w:           ``[C_out, C_in / groups, kh, kw]`` weight, same dtype as ``x``.
        f:           Filter from ``upfirdn2d.setup_filter`` (``None`` = identity).
        up:          Integer upsampling factor.
        down:        Integer downsampling factor.
        padding:     Padding w.r.t. the upsampled image: int, ``[x, y]`` or ``[x0, x1, y0, y1]``.
        groups:      Groups of the convolution.
        flip_weight: ``True`` = correlation (what ``F.conv2d`` does), ``False`` = true convolution.
        flip_filter: ``False`` = ``f`` is applied as a convolution, ``True`` = as a correlation.

    Returns:
        ``[N, C_out, (H*up + py0 + py1 - kh + 1) // down, (W*up + px0 + px1 - kw + 1) // down]``.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f'conv2d_resample: x must be a 4-D [N, C, H, W] tensor, got '
                         f'{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}')
    if not isinstance(w, torch.Tensor) or w.ndim != 4:
        raise ValueError(f'conv2d_resample: w must be a 4-D [C_out, C_in/groups, kh, kw] tensor, got '
                         f'{tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__}')
    if w.dtype != x.dtype:
        raise ValueError(f'conv2d_resample: w has dtype {w.dtype} but x has {x.dtype}; cast w first')
    for name, value in (('up', up), ('down', down), ('groups', groups)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f'conv2d_resample: {name} must be an int >= 1, got {value!r}')
    out_channels, in_per_group, kh, kw = w.shape
    if x.shape[1] != in_per_group * groups or out_channels % groups != 0:
        raise ValueError(f'conv2d_resample: x has {x.shape[1]} channels and w has shape {tuple(w.shape)}, '
                         f'which does not fit groups={groups}')
    fw, fh = _fir._get_filter_size(f)
    px0, px1, py0, py1 = _fir._parse_padding(padding)

    # The centring amounts cancel the filter's own size, so the output is
    # (H*up + py0 + py1 - kh + 1) // down with the user's padding. Checked here so
    # that a bad size gives one sentence rather than an error from deep inside.
    out_h = (x.shape[2] * up + py0 + py1 - kh + 1) // down
    out_w = (x.shape[3] * up + px0 + px1 - kw + 1) // down
    if out_h < 1 or out_w < 1:
        raise ValueError(f'conv2d_resample: a {x.shape[2]}x{x.shape[3]} input with up={up}, down={down}, '
                         f'padding={padding!r} leaves no output pixel for a {kh}x{kw} kernel')

    # Padding of the reference chain: the user's, plus the centring amounts that
    # upsample2d / downsample2d use for a filter of this size.
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    if up > 1:
        if kh == 1 and kw == 1 and down == 1:
            # A 1x1 conv only mixes channels pixel by pixel, so it commutes with the
            # per-channel zero insertion and filtering: run it on the small image.
            x = _conv2d(x, w, groups=groups, flip_weight=flip_weight)
            return _fir.upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up ** 2,
                                  flip_filter=flip_filter)
        x, rest = _upsample_conv2d(x, w, up=up, groups=groups, flip_weight=flip_weight,
                                   pad_x0=px0, pad_x1=px1, pad_y0=py0, pad_y1=py1)
        x = _fir.upfirdn2d(x, f, padding=rest, gain=up ** 2, flip_filter=flip_filter)
        if down > 1:
            x = _fir.upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x

    if down > 1:
        if kh == 1 and kw == 1:
            x = _fir.upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
            return _conv2d(x, w, groups=groups, flip_weight=flip_weight)
        x = _fir.upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv2d(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    # No resampling: f is unused, as in the reference chain.
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv2d(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)
    x = _fir.upfirdn2d(x, None, padding=[px0, px1, py0, py1])
    return _conv2d(x, w, groups=groups, flip_weight=flip_weight)
