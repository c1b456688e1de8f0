"""Carriers of frequency-shifted synthesis: the phase, its cos/sin tables and the shift itself.

    theta(x, y) = 2 pi (u x + v y)                   cycles/pixel; x = column, y = row, origin top-left
    frequency_shift(g_r, g_i, u, v) = Re{(g_r + i g_i) e^{i theta}} = g_r cos theta - g_i sin theta

In the spectrum the shifted signal is 1/2 [G(f - f_k) + G*(-f - f_k)] (G: spectrum of g_r + i g_i):
the band a branch learns easily moves to +-f_k. Carriers with u, v in {-1/2, 0, 1/2} are real on
the pixel grid (sin theta = 0) and are computed exactly.
"""

from __future__ import annotations

import fractions
import functools
import math

import torch

# The paper's four carriers at 1/16 cycles/pixel (u along x, v along y), and the output shift.
FSG16_CARRIERS = ((1 / 16, 0.0), (0.0, 1 / 16), (1 / 16, 1 / 16), (-1 / 16, 1 / 16))
OUT_CARRIER = (0.5, 0.5)

_REAL_TOL = 1e-9


def carrier_is_real(u, v) -> bool:
    """True when sin(2 pi (u x + v y)) is 0 at every integer (x, y): u and v are multiples of 1/2."""
    return all(abs(2 * float(c) - round(2 * float(c))) < _REAL_TOL for c in (u, v))


def carrier_phase(u, v, height, width, device=None, dtype=torch.float32):
    """theta[y, x] = 2 pi (u x + v y), [height, width].

    Python-number carriers are evaluated in float64 with the cycle count reduced modulo 1 before
    the 2 pi (so the phase stays accurate far from the origin) and then cast to `dtype`. Tensor
    carriers (learned) stay in the autograd graph: theta = 2 pi (u x + v y) in their dtype.
    """
    if isinstance(u, torch.Tensor) or isinstance(v, torch.Tensor):
        u = torch.as_tensor(u, device=device)
        v = torch.as_tensor(v, device=device)
        dt = u.dtype if u.is_floating_point() else dtype
        x = torch.arange(width, device=device, dtype=dt)
        y = torch.arange(height, device=device, dtype=dt)
        return (2 * math.pi) * (u * x[None, :] + v * y[:, None])
    x = torch.arange(width, device=device, dtype=torch.float64)
    y = torch.arange(height, device=device, dtype=torch.float64)
    cycles = torch.remainder(float(u) * x[None, :] + float(v) * y[:, None], 1.0)
    return ((2 * math.pi) * cycles).to(dtype)


def carrier_cos_sin(u, v, height, width, device=None, dtype=torch.float32):
    """(cos theta, sin theta), each [height, width]; treat them as read-only (fixed carriers are cached).

    Carriers with u, v in {-1/2, 0, 1/2} (Python numbers) are computed exactly: cos theta is
    (-1)^(2u x + 2v y) and sin theta is exactly 0, so e.g. the (1/2, 1/2) output shift is an exact
    sign flip of every other pixel. Tensor (learned) carriers stay in the autograd graph.
    """
    if isinstance(u, torch.Tensor) or isinstance(v, torch.Tensor):
        theta = carrier_phase(u, v, height, width, device=device, dtype=dtype)
        return theta.cos(), theta.sin()
    return _fixed_cos_sin(float(u), float(v), int(height), int(width), torch.device(device or 'cpu'), dtype)


@functools.lru_cache(maxsize=64)
def _fixed_cos_sin(u, v, height, width, device, dtype):
    if carrier_is_real(u, v):
        a, b = round(2 * float(u)), round(2 * float(v))
        x = torch.arange(width, device=device, dtype=torch.int64)
        y = torch.arange(height, device=device, dtype=torch.int64)
        parity = torch.remainder(a * x[None, :] + b * y[:, None], 2)
        cos = (1 - 2 * parity).to(dtype)
        return cos, torch.zeros_like(cos)
    theta = carrier_phase(u, v, height, width, device=device, dtype=torch.float64)
    return theta.cos().to(dtype), theta.sin().to(dtype)


def frequency_shift(g_r, g_i, u, v):
    """Re{(g_r + i g_i) e^{i theta}} = g_r cos theta - g_i sin theta, theta = 2 pi (u x + v y).

    g_r, g_i: [..., H, W] (g_i may be None: a purely real input); the carrier broadcasts over all
    leading (batch, channel) dimensions. u, v: cycles/pixel, Python numbers or 0-d tensors.
    """
    if g_i is not None and g_i.shape != g_r.shape:
        raise ValueError(f'frequency_shift: g_r {list(g_r.shape)} and g_i {list(g_i.shape)} differ in shape')
    if g_r.ndim < 2:
        raise ValueError(f'frequency_shift: expected [..., H, W], got {list(g_r.shape)}')
    dtype = g_r.dtype if g_r.is_floating_point() else torch.float32
    cos, sin = carrier_cos_sin(u, v, g_r.shape[-2], g_r.shape[-1], device=g_r.device, dtype=dtype)
    out = g_r * cos
    if g_i is not None:
        out = out - g_i * sin
    return out


def check_carriers(carriers, what='carriers'):
    """List of (u, v) pairs of finite numbers in [-1/2, 1/2] -> tuple of (float, float)."""
    try:
        pairs = [tuple(float(c) for c in pair) for pair in carriers]
    except (TypeError, ValueError):
        raise ValueError(f'{what} must be a list of [u, v] pairs of numbers (cycles/pixel), got {carriers!r}') from None
    if not pairs or any(len(p) != 2 for p in pairs):
        raise ValueError(f'{what} must be a non-empty list of [u, v] pairs (cycles/pixel), got {carriers!r}')
    seen = {}
    for p in pairs:
        if not all(math.isfinite(c) and -0.5 <= c <= 0.5 for c in p):
            raise ValueError(f'carrier ({format_frequency(p[0])}, {format_frequency(p[1])}) lies outside '
                             f'[-1/2, 1/2] cycles per pixel')
        # On the pixel grid, carriers equal modulo 1 are the same, and f and -f differ only by the
        # sign of the imaginary branch: listing both would duplicate a branch pair.
        key = min((round(p[0] % 1, 12) % 1, round(p[1] % 1, 12) % 1),
                  (round(-p[0] % 1, 12) % 1, round(-p[1] % 1, 12) % 1))
        if key in seen:
            first, second = (f'({format_frequency(a)}, {format_frequency(b)})' for a, b in (seen[key], p))
            raise ValueError(f'carriers {first} and {second} are the same carrier on the pixel grid '
                             f'(equal or conjugate)')
        seen[key] = p
    return tuple(pairs)


def format_frequency(c) -> str:
    """0.0625 -> '1/16' for messages and descriptions."""
    frac = fractions.Fraction(float(c))
    if frac.denominator == 1:
        return str(frac.numerator)
    if frac.denominator <= 1024:          # exact binary fractions (1/16, -3/8, ...) read best as fractions
        return f'{frac.numerator}/{frac.denominator}'
    return f'{c:g}'
