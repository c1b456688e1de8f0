"""Frequency-shifted synthesis (FSG): Khayatkhoei & Elgammal, AAAI 2022 (research/freqbias.md §1).

A convolutional generator learns low spatial frequencies easily and high ones badly. Multiplying
a branch's output by a carrier moves the band it learns easily to the carrier's frequency:

    theta_k(x, y) = 2 pi (u_k x + v_k y)          cycles/pixel; x = column, y = row, origin top-left
    FS_k(g_r, g_i) = Re{(g_r + i g_i) e^{i theta_k}} = g_r cos theta_k - g_i sin theta_k

In the spectrum, FS_k(g) = 1/2 [G(f - f_k) + G*(-f - f_k)] with G the spectrum of g_r + i g_i, so
the branch's baseband appears at +-f_k. The output is real: the imaginary part g_i is a second,
independent real branch, and it is left out where sin theta_k is 0 on the whole pixel grid
(u_k, v_k in {-1/2, 0, 1/2}).

`FrequencyShiftedGenerator` wraps any StyleGAN2 generator (stylefreq's `training.networks.Generator`
or one shaped like upstream's: `.mapping`, `.synthesis` with blocks `b4 ... bR`,
`block_resolutions`, blocks with `num_conv`/`num_torgb`), built through `class_name`:

    G_kwargs = dict(class_name='stylefreq.freqshift.FrequencyShiftedGenerator',
                    base_kwargs=dict(class_name='training.networks.Generator', z_dim=512, w_dim=512,
                                     mapping_kwargs={...}, synthesis_kwargs={...}),
                    mode='fsg', carriers=[[1/16, 0], [0, 1/16], [1/16, 1/16], [-1/16, 1/16]])

Modes:
- 'out': the whole image times cos(theta) of one carrier, (1/2, 1/2) by default, i.e. (-1)^(x+y)
  (the paper's generator for frequency-shifted datasets). No parameters.
- 'fsg': per carrier a real and (unless sin theta == 0) an imaginary branch; each is one synthesis
  block at R/2 (in ch(R/4), out ch(R/2), skip ToRGB) fed from the R/4 feature map with the last
  block's ws, its RGB output upsampled 2x with the block's FIR filter, shifted, and added to the
  image in float32 (research/freqbias.md §1.3, §1.6).
- 'noshift': the same branches summed without carriers (the paper's ablation).
- 'learn': 'fsg' with the carriers as parameters (both branches always, since a learned carrier
  leaves the sin == 0 set).

The wrapper keeps `.mapping` and `.synthesis` (the shift lives inside the synthesis network), and
`z_dim, c_dim, w_dim, num_ws, img_resolution, img_channels`, so loss, EMA, truncation,
generate.py and metrics see an ordinary generator. The base network's tensors keep their exact
names (`mapping.fc0.weight`, `synthesis.b4.const`, ...): a plain StyleGAN2 checkpoint loads by name.
Branch tensors live under `synthesis.fsg.<j>.*`, their output gains in `synthesis.fsg_gain`, learned
carriers in `synthesis.fsg_carriers`.

Fine-tuning: every branch's output is multiplied by its own gain, which starts at 0 (`gain_init`),
so a freshly wrapped generator produces exactly (bit for bit) the base generator's images and
pretrained weights load untouched. A zero gain blocks the gradient into its branch only until the
first optimizer step: the gain itself gets a gradient (the branch output times the image
gradient) and Adam moves it by about one learning rate per step, after which the branch weights
train at full speed (Adam normalises the gradient scale).

This module imports only torch and stylefreq: the base generator is constructed by class name.
"""

import fractions
import math
import re

import torch

from stylefreq.kwargs import EasyDict, construct_class_by_name
from stylefreq.ops import upfirdn2d
from stylefreq.persistence import persistent_class

__all__ = [
    'FSG16_CARRIERS', 'MODES', 'PRESETS', 'carrier_is_real', 'carrier_phase', 'carrier_cos_sin',
    'frequency_shift', 'parse_carriers', 'parse_freq_shift', 'freq_shift_desc', 'freq_shift_G_kwargs',
    'FrequencyShiftedSynthesis', 'FrequencyShiftedGenerator',
]

# The paper's four carriers at 1/16 cycles/pixel, (u = x, v = y) (research/freqbias.md §1.2 B).
FSG16_CARRIERS = ((1 / 16, 0.0), (0.0, 1 / 16), (1 / 16, 1 / 16), (-1 / 16, 1 / 16))
OUT_CARRIER = (0.5, 0.5)
MODES = ('out', 'fsg', 'noshift', 'learn')

# --freq-shift presets: name -> (mode, carriers).
PRESETS = {
    'out': ('out', (OUT_CARRIER,)),
    'fsg16': ('fsg', FSG16_CARRIERS),
    'noshift16': ('noshift', FSG16_CARRIERS),
    'learn16': ('learn', FSG16_CARRIERS),
}

_REAL_TOL = 1e-9


# ------------------------------------------------------------------------------------------------
# Carriers.


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
    """(cos theta, sin theta), each [height, width].

    Carriers with u, v in {-1/2, 0, 1/2} (Python numbers) are computed exactly: cos theta is
    (-1)^(2u x + 2v y) and sin theta is exactly 0, so e.g. the (1/2, 1/2) output shift is an exact
    sign flip of every other pixel.
    """
    if not isinstance(u, torch.Tensor) and not isinstance(v, torch.Tensor) and carrier_is_real(u, v):
        a, b = round(2 * float(u)), round(2 * float(v))
        x = torch.arange(width, device=device, dtype=torch.int64)
        y = torch.arange(height, device=device, dtype=torch.int64)
        parity = torch.remainder(a * x[None, :] + b * y[:, None], 2)
        cos = (1 - 2 * parity).to(dtype)
        return cos, torch.zeros_like(cos)
    theta = carrier_phase(u, v, height, width, device=device, dtype=torch.float64 if not isinstance(u, torch.Tensor)
                          else dtype)
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


def _check_carriers(carriers, what='carriers'):
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
            raise ValueError(f'carrier ({_fmt(p[0])}, {_fmt(p[1])}) lies outside [-1/2, 1/2] cycles per pixel')
        # On the pixel grid, carriers equal modulo 1 are the same, and f and -f differ only by the
        # sign of the imaginary branch: listing both would duplicate a branch pair.
        key = min((round(p[0] % 1, 12) % 1, round(p[1] % 1, 12) % 1),
                  (round(-p[0] % 1, 12) % 1, round(-p[1] % 1, 12) % 1))
        if key in seen:
            raise ValueError(f'carriers ({_fmt(seen[key][0])}, {_fmt(seen[key][1])}) and ({_fmt(p[0])}, '
                             f'{_fmt(p[1])}) are the same carrier on the pixel grid (equal or conjugate)')
        seen[key] = p
    return tuple(pairs)


def _fmt(c) -> str:
    """0.0625 -> '1/16' for messages and descriptions."""
    frac = fractions.Fraction(float(c))
    if frac.denominator == 1:
        return str(frac.numerator)
    if frac.denominator <= 1024:          # exact binary fractions (1/16, -3/8, ...) read best as fractions
        return f'{frac.numerator}/{frac.denominator}'
    return f'{c:g}'


# ------------------------------------------------------------------------------------------------
# Command-line values (train.py --freq-shift).

_NUMBER = r'[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?'
_COMPONENT = re.compile(rf'\s*({_NUMBER})\s*(?:/\s*({_NUMBER})\s*)?')


def _parse_component(text, item):
    m = _COMPONENT.fullmatch(text)
    if m is None:
        raise ValueError(f'{item!r} is not a carrier u,v of numbers or fractions such as 1/16')
    num = float(m.group(1))
    if m.group(2) is None:
        return num
    den = float(m.group(2))
    if den == 0:
        raise ValueError(f'{item!r} divides by zero')
    # Fractions of integers stay exact (1/16 -> 0.0625 exactly); decimals go through float.
    try:
        return float(fractions.Fraction(m.group(1)) / fractions.Fraction(m.group(2)))
    except (ValueError, ZeroDivisionError):
        return num / den


def parse_carriers(text):
    """'1/16,0;0,1/16' -> ((0.0625, 0.0), (0.0, 0.0625)); ValueError (one sentence) on bad input.

    Carriers are separated by ';', each is 'u,v' (optionally in parentheses) in cycles per pixel,
    u along x (columns) and v along y (rows); numbers may be decimals or fractions.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError('expected a list of carriers u,v separated by ";" (e.g. 1/16,0;0,1/16)')
    pairs = []
    for item in text.strip().strip(';').split(';'):
        body = item.strip()
        if body.startswith('(') and body.endswith(')'):
            body = body[1:-1]
        parts = body.split(',')
        if len(parts) != 2:
            raise ValueError(f'{item.strip()!r} is not a carrier u,v (expected two numbers separated by a comma, '
                             f'carriers separated by ";", e.g. 1/16,0;0,1/16)')
        pairs.append(tuple(_parse_component(p, item.strip()) for p in parts))
    return _check_carriers(pairs)


def parse_freq_shift(text):
    """--freq-shift value -> None (no shift) or dict(mode=..., carriers=[[u, v], ...]).

    Values: none, out, fsg16, noshift16, learn16, or an explicit carrier list (FSG branches at
    those carriers). Raises ValueError with one sentence (without the flag name) on bad input.
    """
    if text is None:
        return None
    key = str(text).strip().lower()
    if key in ('', 'none'):
        return None
    if key in PRESETS:
        mode, carriers = PRESETS[key]
        return dict(mode=mode, carriers=[list(c) for c in carriers])
    if ',' not in key and re.match(r'[a-z]', key):
        raise ValueError(f'{text!r} is neither none, {", ".join(PRESETS)} nor a carrier list such as 1/16,0;0,1/16')
    return dict(mode='fsg', carriers=[list(c) for c in parse_carriers(str(text))])


def freq_shift_desc(text):
    """Run-directory suffix for a --freq-shift value: 'fsg16', 'out', ..., 'fsgcustom'; None for none."""
    spec = parse_freq_shift(text)
    if spec is None:
        return None
    key = str(text).strip().lower()
    return key if key in PRESETS else 'fsgcustom'


def freq_shift_G_kwargs(G_kwargs, mode, carriers=None, **options):
    """Wrap a generator's class_name + kwargs into FrequencyShiftedGenerator kwargs (a new dict)."""
    base_kwargs = EasyDict(G_kwargs)
    if 'class_name' not in base_kwargs:
        raise ValueError('G_kwargs must name the base generator with class_name')
    return EasyDict(class_name='stylefreq.freqshift.FrequencyShiftedGenerator', base_kwargs=base_kwargs, mode=mode,
                    carriers=None if carriers is None else [list(map(float, c)) for c in carriers], **options)


# ------------------------------------------------------------------------------------------------
# Networks.


def _block_channels(block):
    """Output feature channels of a synthesis block (from its conv1 weight, upstream's layout)."""
    conv1 = getattr(block, 'conv1', None)
    weight = getattr(conv1, 'weight', None)
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f'{type(block).__name__} has no conv1.weight; FrequencyShiftedGenerator needs '
                         f'StyleGAN2-shaped synthesis blocks')
    return int(weight.shape[0])


@persistent_class
class FrequencyShiftedSynthesis(torch.nn.Module):
    """A StyleGAN2 synthesis network plus frequency-shifted branches: ws [N, num_ws, w_dim] -> image.

    Construction records only the options; `attach(base_synthesis)` then adopts the base network's
    blocks under their own names (`b4 ... bR`, so their tensors keep upstream's names) and builds
    the branches. `FrequencyShiftedGenerator` does both; `FrequencyShiftedSynthesis.wrap(base, ...)`
    is the one-call form.
    """

    def __init__(self, mode='fsg', carriers=None, gain_init=0.0, carrier_lr_mult=0.01, branch_kwargs={}):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f'mode must be one of {", ".join(MODES)}, got {mode!r}')
        if carriers is None:
            carriers = (OUT_CARRIER,) if mode == 'out' else FSG16_CARRIERS
        carriers = _check_carriers(carriers)
        if mode == 'out' and len(carriers) != 1:
            raise ValueError(f"mode 'out' multiplies the image by one carrier, got {len(carriers)}")
        if not carrier_lr_mult > 0:
            raise ValueError(f'carrier_lr_mult must be positive, got {carrier_lr_mult!r}')
        self.mode = mode
        self.carriers = carriers
        self.gain_init = float(gain_init)
        self.carrier_lr_mult = float(carrier_lr_mult)
        self.branch_kwargs = dict(branch_kwargs)
        self.block_resolutions = None
        self.branch_parts = []          # per branch j: (carrier index k, 'real' | 'imag')
        self._table_cache = {}          # fixed carriers: (k, H, W, device, dtype) -> (cos, sin); derived data

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def wrap(cls, base_synthesis, **options):
        module = cls(**options)
        module.attach(base_synthesis)
        return module

    def attach(self, base):
        if self.block_resolutions is not None:
            raise RuntimeError('this FrequencyShiftedSynthesis already has its base network')
        resolutions = [int(r) for r in getattr(base, 'block_resolutions', [])]
        blocks = [getattr(base, f'b{r}', None) for r in resolutions]
        if not resolutions or any(not isinstance(b, torch.nn.Module) for b in blocks):
            raise ValueError(f'{type(base).__name__} is not a StyleGAN2 synthesis network (it needs '
                             f'block_resolutions and blocks b4 ... bR)')
        # Everything the base network holds must live in its blocks, or adopting the blocks drops it.
        adopted = {id(t) for b in blocks for t in list(b.parameters()) + list(b.buffers())}
        stray = [n for n, t in list(base.named_parameters()) + list(base.named_buffers()) if id(t) not in adopted]
        if stray:
            raise ValueError(f'{type(base).__name__} holds tensors outside its blocks ({", ".join(stray[:3])}); '
                             f'FrequencyShiftedSynthesis cannot adopt it')
        for res, block in zip(resolutions, blocks):
            for attr in ('num_conv', 'num_torgb'):
                if not isinstance(getattr(block, attr, None), int):
                    raise ValueError(f'block b{res} ({type(block).__name__}) has no integer {attr}')

        R = int(getattr(base, 'img_resolution', resolutions[-1]))
        self.w_dim = int(base.w_dim)
        self.img_resolution = R
        self.img_resolution_log2 = int(math.log2(R))
        self.img_channels = int(base.img_channels)
        self.block_resolutions = resolutions
        for res, block in zip(resolutions, blocks):
            setattr(self, f'b{res}', block)
        self.num_ws = sum(b.num_conv for b in blocks) + blocks[-1].num_torgb
        if getattr(base, 'num_ws', self.num_ws) != self.num_ws:
            raise ValueError(f'{type(base).__name__}.num_ws={base.num_ws} does not match its blocks ({self.num_ws})')

        if self.mode == 'out':
            return
        if R // 4 not in resolutions or R // 2 not in resolutions:
            raise ValueError(f"mode {self.mode!r} attaches branches to the R/4 feature map and needs "
                             f"img_resolution >= 16, got {R}")
        last = blocks[-1]
        feat_block, half_block = getattr(self, f'b{R // 4}'), getattr(self, f'b{R // 2}')
        kwargs = dict(w_dim=self.w_dim, resolution=R // 2, img_channels=self.img_channels, is_last=True,
                      architecture='skip', resample_filter=[1, 3, 3, 1],
                      conv_clamp=getattr(half_block.conv1, 'conv_clamp', None),
                      use_fp16=bool(getattr(half_block, 'use_fp16', False)),
                      fp16_channels_last=bool(getattr(half_block, 'channels_last', False)))
        kwargs.update(self.branch_kwargs)
        block_class = type(last)
        in_ch, out_ch = _block_channels(feat_block), _block_channels(half_block)

        for k, (u, v) in enumerate(self.carriers):
            parts = ['real'] if (self.mode != 'learn' and carrier_is_real(u, v)) else ['real', 'imag']
            self.branch_parts += [(k, part) for part in parts]
        self.fsg = torch.nn.ModuleList([block_class(in_ch, out_ch, **kwargs) for _ in self.branch_parts])
        for j, branch in enumerate(self.fsg):
            if branch.num_conv + branch.num_torgb != last.num_conv + last.num_torgb:
                raise ValueError(f'branch fsg.{j} consumes {branch.num_conv + branch.num_torgb} ws but the last '
                                 f'block b{R} provides {last.num_conv + last.num_torgb}')
        ref = getattr(half_block, 'resample_filter', None)
        if isinstance(ref, torch.Tensor) and not torch.equal(self.fsg[0].resample_filter, ref):
            raise ValueError(f'the base network resamples with another FIR filter than the branches; pass '
                             f'branch_kwargs=dict(resample_filter=[...]) with the taps of b{R // 2}')
        self.fsg_gain = torch.nn.Parameter(torch.full([len(self.fsg)], self.gain_init))
        if self.mode == 'learn':
            # Stored divided by carrier_lr_mult (equalised-learning-rate style): Adam moves a
            # parameter by about lr per step whatever the gradient scale, which for a raw carrier
            # (0.0025 cycles/pixel per step) would wander off in a few dozen steps.
            self.fsg_carriers = torch.nn.Parameter(torch.tensor(self.carriers, dtype=torch.float32)
                                                   / self.carrier_lr_mult)

    # -- helpers ------------------------------------------------------------------------------------

    def carrier_values(self):
        """[K, 2] carriers (u, v) in cycles/pixel as used now (learned ones included)."""
        if self.mode == 'learn' and self.block_resolutions is not None:
            return (self.fsg_carriers * self.carrier_lr_mult).detach().clone()
        return torch.tensor(self.carriers, dtype=torch.float64)

    def branch_names(self):
        """Per branch: 'fsg.<j>: <real|imag> branch of carrier (u, v)'."""
        return [f'fsg.{j}: {part} branch of carrier ({_fmt(self.carriers[k][0])}, {_fmt(self.carriers[k][1])})'
                for j, (k, part) in enumerate(self.branch_parts)]

    def _fixed_tables(self, k, H, W, device, dtype):
        key = (k, H, W, str(device), dtype)
        tables = self._table_cache.get(key)
        if tables is None:
            u, v = self.carriers[k]
            tables = carrier_cos_sin(u, v, H, W, device=device, dtype=dtype)
            self._table_cache[key] = tables
        return tables

    def split_ws(self, ws):
        """The slice of `ws` each base block consumes, in block order (upstream's split)."""
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f'synthesis ws: expected shape [*, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}')
        ws = ws.to(torch.float32)
        out, idx = [], 0
        for res in self.block_resolutions:
            block = getattr(self, f'b{res}')
            out.append(ws.narrow(1, idx, block.num_conv + block.num_torgb))
            idx += block.num_conv
        return out

    # -- forward ------------------------------------------------------------------------------------

    def forward(self, ws, **block_kwargs):
        if self.block_resolutions is None:
            raise RuntimeError('FrequencyShiftedSynthesis has no base network yet (call attach)')
        block_ws = self.split_ws(ws)
        R = self.img_resolution
        x = img = feat = None
        # The base blocks run first and in their usual order, so they draw the same random noise as
        # the base network would: with zero gains the output is the base network's, noise included.
        for res, bws in zip(self.block_resolutions, block_ws):
            x, img = getattr(self, f'b{res}')(x, img, bws, **block_kwargs)
            if res == R // 4:
                feat = x
        img = img.to(torch.float32)

        if self.mode == 'out':
            cos, _ = self._fixed_tables(0, R, R, img.device, img.dtype)
            return img * cos

        ys = []
        for j, branch in enumerate(self.fsg):
            _, y = branch(feat, None, block_ws[-1], **block_kwargs)
            y = upfirdn2d.upsample2d(y.to(torch.float32), branch.resample_filter)
            ys.append(y * self.fsg_gain[j].to(torch.float32))

        if self.mode == 'learn':
            carriers = self.fsg_carriers.to(torch.float32) * self.carrier_lr_mult
        total = None
        for j, (k, part) in enumerate(self.branch_parts):
            if part == 'imag':
                continue   # handled with its real branch (always the one before it)
            y_r = ys[j]
            y_i = ys[j + 1] if j + 1 < len(self.branch_parts) and self.branch_parts[j + 1] == (k, 'imag') else None
            if self.mode == 'noshift':
                term = y_r if y_i is None else y_r + y_i
            else:
                if self.mode == 'learn':
                    cos, sin = carrier_cos_sin(carriers[k, 0], carriers[k, 1], R, R, device=img.device,
                                               dtype=torch.float32)
                else:
                    cos, sin = self._fixed_tables(k, R, R, img.device, torch.float32)
                term = y_r * cos
                if y_i is not None:
                    term = term - y_i * sin
            total = term if total is None else total + term
        return img + total

    def extra_repr(self):
        carriers = ', '.join(f'({_fmt(u)}, {_fmt(v)})' for u, v in self.carriers)
        return f'mode={self.mode}, carriers=[{carriers}], branches={len(self.branch_parts)}'


@persistent_class
class FrequencyShiftedGenerator(torch.nn.Module):
    """A StyleGAN2 generator (given by `base_kwargs`, with its class_name) with frequency-shifted synthesis.

    `G(z, c, truncation_psi, truncation_cutoff, **synthesis_kwargs)` like the base generator;
    `.mapping` is the base mapping network and `.synthesis` a `FrequencyShiftedSynthesis` holding
    the base synthesis blocks (same tensor names) and the branches.

    base_kwargs: the base generator's class_name and constructor arguments (without c_dim,
        img_resolution, img_channels, which come from here).
    mode, carriers: see the module docstring; carriers [[u, v], ...] in cycles/pixel, default the
        paper's four at 1/16 (mode 'out': (1/2, 1/2)).
    gain_init: initial output gain of every branch (0: start exactly at the base generator).
    carrier_lr_mult: learning-rate multiplier of learned carriers (mode 'learn').
    branch_kwargs: extra SynthesisBlock arguments for the branches (e.g. resample_filter).
    synthesis_kwargs: entries merged into base_kwargs['synthesis_kwargs'].
    """

    def __init__(self, c_dim, img_resolution, img_channels, base_kwargs, mode='fsg', carriers=None, gain_init=0.0,
                 carrier_lr_mult=0.01, branch_kwargs={}, synthesis_kwargs=None):
        super().__init__()
        base_kwargs = dict(base_kwargs)
        if synthesis_kwargs:
            # Overrides merged into the base's synthesis_kwargs: what checkpoint.load_network_pkl(
            # force_fp16=True) passes to a generator (num_fp16_res, conv_clamp).
            base_kwargs['synthesis_kwargs'] = {**dict(base_kwargs.get('synthesis_kwargs') or {}), **synthesis_kwargs}
        class_name = base_kwargs.pop('class_name', None)
        if not isinstance(class_name, str):
            raise ValueError('base_kwargs must name the base generator with class_name '
                             '(e.g. training.networks.Generator)')
        # Options are checked before the (possibly large) base network is built.
        synthesis = FrequencyShiftedSynthesis(mode=mode, carriers=carriers, gain_init=gain_init,
                                              carrier_lr_mult=carrier_lr_mult, branch_kwargs=branch_kwargs)
        base = construct_class_by_name(class_name=class_name, c_dim=c_dim, img_resolution=img_resolution,
                                       img_channels=img_channels, **base_kwargs)
        for attr in ('mapping', 'synthesis'):
            if not isinstance(getattr(base, attr, None), torch.nn.Module):
                raise ValueError(f'{class_name} has no .{attr} network; FrequencyShiftedGenerator wraps '
                                 f'StyleGAN2 generators (mapping + synthesis)')
        kept = {id(t) for m in (base.mapping, base.synthesis) for t in list(m.parameters()) + list(m.buffers())}
        stray = [n for n, t in list(base.named_parameters()) + list(base.named_buffers()) if id(t) not in kept]
        if stray:
            raise ValueError(f'{class_name} holds tensors outside .mapping and .synthesis ({", ".join(stray[:3])})')
        self.z_dim = int(base.z_dim)
        self.c_dim = int(getattr(base, 'c_dim', c_dim))
        self.w_dim = int(base.w_dim)
        self.img_resolution = int(getattr(base, 'img_resolution', img_resolution))
        self.img_channels = int(getattr(base, 'img_channels', img_channels))
        self.mapping = base.mapping
        synthesis.attach(base.synthesis)
        self.synthesis = synthesis
        self.num_ws = synthesis.num_ws

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)
