"""Frequency-shifted synthesis (FSG, Khayatkhoei & Elgammal, AAAI 2022) as network modules.

`FrequencyShiftedGenerator` wraps any StyleGAN2 generator (stylefreq's, or one shaped like
upstream's: `.mapping`, `.synthesis` with `block_resolutions` and blocks `b4 ... bR` that have
`num_conv`/`num_torgb`), built through `class_name`:

    G_kwargs = dict(class_name='stylefreq.freqshift.FrequencyShiftedGenerator',
                    base_kwargs=dict(class_name='training.networks.Generator', z_dim=512, w_dim=512, ...),
                    mode='fsg', carriers=[[1/16, 0], [0, 1/16], [1/16, 1/16], [-1/16, 1/16]])

It keeps `.mapping`, `.synthesis`, `z_dim, c_dim, w_dim, num_ws, img_resolution, img_channels`,
so loss, EMA, truncation, generate.py and metrics see an ordinary generator; the base network's
tensors keep their names, so a plain StyleGAN2 checkpoint loads by name. Modes, branch layout
and the mathematics of the shift: README, "Frequency-shifted synthesis"; the carrier maths lives
in stylefreq.carriers.
"""

import torch

from stylefreq.carriers import (FSG16_CARRIERS, OUT_CARRIER, carrier_is_real, check_carriers, format_frequency,
                                frequency_shift)
from stylefreq.kwargs import construct_class_by_name
from stylefreq.ops import upfirdn2d
from stylefreq.persistence import persistent_class

MODES = ('out', 'fsg', 'noshift', 'learn')



# ------------------------------------------------------------------------------------------------
# Networks.


def _adopt_blocks(base):
    """(resolutions, blocks) of a StyleGAN2-shaped synthesis network, checked."""
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
        if not all(isinstance(getattr(block, a, None), int) for a in ('num_conv', 'num_torgb')):
            raise ValueError(f'block b{res} ({type(block).__name__}) has no integer num_conv / num_torgb')
    return resolutions, blocks


def _block_channels(block):
    """Output feature channels of a synthesis block (from its conv1 weight, upstream's layout)."""
    weight = getattr(getattr(block, 'conv1', None), 'weight', None)
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f'{type(block).__name__} has no conv1.weight; FrequencyShiftedGenerator needs '
                         f'StyleGAN2-shaped synthesis blocks')
    return int(weight.shape[0])


class FrequencyShiftedSynthesis(torch.nn.Module):
    """A StyleGAN2 synthesis network plus frequency-shifted branches: ws [N, num_ws, w_dim] -> image.

    Adopts the base network's blocks under their own names (`b4 ... bR`: their tensors keep
    upstream's names) and builds the branches `fsg.<j>` (per carrier a real branch, then an
    imaginary one unless the carrier is real on the grid), their output gains `fsg_gain` and, in
    mode 'learn', the carriers `fsg_carriers`. Built by FrequencyShiftedGenerator, which records
    the constructor arguments.
    """

    def __init__(self, base, mode='fsg', carriers=None, gain_init=0.0, carrier_lr_mult=0.01, branch_kwargs={}):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f'mode must be one of {", ".join(MODES)}, got {mode!r}')
        carriers = check_carriers((OUT_CARRIER,) if mode == 'out' else FSG16_CARRIERS) if carriers is None \
            else check_carriers(carriers)
        if mode == 'out' and len(carriers) != 1:
            raise ValueError(f"mode 'out' multiplies the image by one carrier, got {len(carriers)}")
        if not carrier_lr_mult > 0:
            raise ValueError(f'carrier_lr_mult must be positive, got {carrier_lr_mult!r}')
        resolutions, blocks = _adopt_blocks(base)
        self.mode, self.carriers = mode, carriers
        self.carrier_lr_mult = float(carrier_lr_mult)
        self.w_dim = int(base.w_dim)
        self.img_resolution = int(getattr(base, 'img_resolution', resolutions[-1]))
        self.img_channels = int(base.img_channels)
        self.block_resolutions = resolutions
        for res, block in zip(resolutions, blocks):
            self.add_module(f'b{res}', block)
        self.num_ws = sum(b.num_conv for b in blocks) + blocks[-1].num_torgb
        if getattr(base, 'num_ws', self.num_ws) != self.num_ws:
            raise ValueError(f'{type(base).__name__}.num_ws={base.num_ws} does not match its blocks ({self.num_ws})')
        self.pairs = []                 # per carrier k: (k, index of its real branch, of its imaginary one or None)
        if mode != 'out':
            self._build_branches(blocks, float(gain_init), dict(branch_kwargs))

    def _build_branches(self, blocks, gain_init, branch_kwargs):
        R = self.img_resolution
        if R // 4 not in self.block_resolutions or R // 2 not in self.block_resolutions:
            raise ValueError(f"mode {self.mode!r} attaches branches to the R/4 feature map and needs "
                             f"img_resolution >= 16, got {R}")
        feat_block, half_block, last = getattr(self, f'b{R // 4}'), getattr(self, f'b{R // 2}'), blocks[-1]
        kwargs = dict(w_dim=self.w_dim, resolution=R // 2, img_channels=self.img_channels, is_last=True,
                      architecture='skip', resample_filter=[1, 3, 3, 1],
                      conv_clamp=getattr(half_block.conv1, 'conv_clamp', None),
                      use_fp16=bool(getattr(half_block, 'use_fp16', False)),
                      fp16_channels_last=bool(getattr(half_block, 'channels_last', False)))
        kwargs.update(branch_kwargs)
        make = lambda: type(last)(_block_channels(feat_block), _block_channels(half_block), **kwargs)  # noqa: E731
        branches = []
        for k, (u, v) in enumerate(self.carriers):
            imaginary = self.mode == 'learn' or not carrier_is_real(u, v)   # a learned carrier leaves sin == 0
            real_j = len(branches)
            branches.append(make())
            if imaginary:
                branches.append(make())
            self.pairs.append((k, real_j, real_j + 1 if imaginary else None))
        self.fsg = torch.nn.ModuleList(branches)
        if any(b.num_conv + b.num_torgb != last.num_conv + last.num_torgb for b in self.fsg):
            raise ValueError(f'the branches consume another number of ws than the last block b{R} provides')
        ref = getattr(half_block, 'resample_filter', None)
        if isinstance(ref, torch.Tensor) and not torch.equal(self.fsg[0].resample_filter, ref):
            raise ValueError(f'the base network resamples with another FIR filter than the branches; pass '
                             f'branch_kwargs=dict(resample_filter=[...]) with the taps of b{R // 2}')
        self.fsg_gain = torch.nn.Parameter(torch.full([len(self.fsg)], gain_init))
        if self.mode == 'learn':
            # Stored divided by carrier_lr_mult (equalised-learning-rate style): Adam moves a
            # parameter by about lr per step whatever the gradient scale, which for a raw carrier
            # (0.0025 cycles/pixel per step) would wander off in a few dozen steps.
            self.fsg_carriers = torch.nn.Parameter(torch.tensor(self.carriers, dtype=torch.float32)
                                                   / self.carrier_lr_mult)

    def carrier_values(self):
        """[K, 2] carriers (u, v) in cycles/pixel as used now (learned ones included)."""
        if self.mode == 'learn':
            return (self.fsg_carriers * self.carrier_lr_mult).detach().clone()
        return torch.tensor(self.carriers, dtype=torch.float64)

    def branch_names(self):
        """Per branch: 'fsg.<j>: <real|imag> branch of carrier (u, v)'."""
        names = {}
        for k, real_j, imag_j in self.pairs:
            carrier = '({}, {})'.format(*(format_frequency(c) for c in self.carriers[k]))
            names[real_j] = f'fsg.{real_j}: real branch of carrier {carrier}'
            if imag_j is not None:
                names[imag_j] = f'fsg.{imag_j}: imag branch of carrier {carrier}'
        return [names[j] for j in sorted(names)]

    def split_ws(self, ws):
        """The slice of `ws` each base block consumes, in block order (upstream's overlapping windows)."""
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f'synthesis ws: expected shape [*, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}')
        ws = ws.to(torch.float32)
        out, start = [], 0
        for res in self.block_resolutions:
            block = getattr(self, f'b{res}')
            out.append(ws[:, start:start + block.num_conv + block.num_torgb])
            start += block.num_conv
        return out

    def _carrier(self, k):
        if self.mode == 'learn':
            u, v = (self.fsg_carriers[k].to(torch.float32) * self.carrier_lr_mult).unbind()
            return u, v
        return self.carriers[k]

    def forward(self, ws, **block_kwargs):
        block_ws = self.split_ws(ws)
        R = self.img_resolution
        x = img = feat = None
        # The base blocks run first, in their usual order, so they draw the same random noise as the
        # base network: with zero gains the output is the base network's, noise included.
        for res, bws in zip(self.block_resolutions, block_ws):
            x, img = getattr(self, f'b{res}')(x, img, bws, **block_kwargs)
            if res == R // 4:
                feat = x
        img = img.to(torch.float32)
        if self.mode == 'out':
            return frequency_shift(img, None, *self.carriers[0])

        outputs = []
        for j, branch in enumerate(self.fsg):
            _, y = branch(feat, None, block_ws[-1], **block_kwargs)
            y = upfirdn2d.upsample2d(y.to(torch.float32), branch.resample_filter)
            outputs.append(y * self.fsg_gain[j].to(torch.float32))
        for k, real_j, imag_j in self.pairs:
            y_r, y_i = outputs[real_j], None if imag_j is None else outputs[imag_j]
            if self.mode == 'noshift':
                img = img + (y_r if y_i is None else y_r + y_i)
            else:
                img = img + frequency_shift(y_r, y_i, *self._carrier(k))
        return img

    def extra_repr(self):
        carriers = ', '.join('({}, {})'.format(*(format_frequency(c) for c in pair)) for pair in self.carriers)
        return f'mode={self.mode}, carriers=[{carriers}], branches={len(getattr(self, "fsg", []))}'


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
        if mode not in MODES:      # checked before the (possibly large) base network is built
            raise ValueError(f'mode must be one of {", ".join(MODES)}, got {mode!r}')
        if carriers is not None:
            check_carriers(carriers)
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
        self.synthesis = FrequencyShiftedSynthesis(base.synthesis, mode=mode, carriers=carriers, gain_init=gain_init,
                                                   carrier_lr_mult=carrier_lr_mult, branch_kwargs=branch_kwargs)
        self.num_ws = self.synthesis.num_ws

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)
