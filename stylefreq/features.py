"""The two papers' features as training options: one implementation for both front ends.

stylefreq's `train.py` (through `training/config.py`) and a patched StyleGAN2-ADA checkout (through
`stylefreq.upstream.configure_training`) build their network-kwargs dicts their own way; this module
then wraps them, checks the flags and names the run directory:

    SSD-GAN branch     --cfg=ssd | --ssd=1 | --ssd-lambda | --ssd-mode
                       D_kwargs -> SSDDiscriminator(spatial_kwargs=<the D the flags built>, mode, ssd_lambda)
                       run dir: -ssd1 (the preset's own name) or -ssd, then -ssdjoint, -ssdlambda<L>
    frequency shift    --freq-shift=out|fsg16|noshift16|learn16|<carriers>
                       G_kwargs -> FrequencyShiftedGenerator(base_kwargs=<the G the flags built>, mode, carriers)
                       run dir: -<preset name> or -fsgcustom

Wrappers are built with the type of the dict they wrap (upstream's dnnlib.EasyDict stays one) and
contain only JSON values, so they go into training_options.json as they are. Every refusal is a
`FeatureError` (a ValueError) whose message is one sentence naming the flag.
"""

from __future__ import annotations

import dataclasses
import fractions
import re

from stylefreq.carriers import FSG16_CARRIERS, OUT_CARRIER, check_carriers
from stylefreq.freqshift import FrequencyShiftedGenerator
from stylefreq.kwargs import EasyDict
from stylefreq.ssd import MODES as SSD_MODES, SSDDiscriminator

SSD_MIN_RESOLUTION = 8       # the radial spectrum needs a few rings besides DC and the corners
FSG_MIN_RESOLUTION = 16      # FSG branches are fed from the R/4 feature map, which must be at least 4x4
SSD_DEFAULT_LAMBDA = 0.5


class FeatureError(ValueError):
    """A feature flag that cannot be honoured; the message is one sentence naming the flag."""


# ---------------------------------------------------------------------------------------------------
# SSD-GAN discriminator branch.

@dataclasses.dataclass(frozen=True)
class SSDChoice:
    """What the SSD flags ask for. `flag` names the flag that turned the branch on (for messages)."""
    enabled: bool
    mode: str = SSD_MODES[0]
    ssd_lambda: float = SSD_DEFAULT_LAMBDA
    suffix: str = ''
    flag: str = ''


def ssd_choice(preset_ssd=False, ssd=None, ssd_lambda=None, ssd_mode=None) -> SSDChoice:
    """Interpret --cfg=ssd (`preset_ssd`), --ssd (None = not given), --ssd-lambda and --ssd-mode."""
    asked_by = [flag for flag, given in (('--cfg=ssd', preset_ssd), ('--ssd=1', bool(ssd)),
                                         ('--ssd-lambda', ssd_lambda is not None),
                                         ('--ssd-mode', ssd_mode is not None)) if given]
    if ssd is not None and not ssd:
        if asked_by:
            raise FeatureError('--ssd=0 contradicts --cfg=ssd, --ssd-lambda and --ssd-mode')
        return SSDChoice(enabled=False)
    if not asked_by:
        return SSDChoice(enabled=False)

    if ssd_lambda is not None:
        try:
            ssd_lambda = float(ssd_lambda)
        except (TypeError, ValueError):
            raise FeatureError(f'--ssd-lambda must be a number in (0, 1], got {ssd_lambda!r}') from None
        if not 0 < ssd_lambda <= 1:        # also refuses NaN
            raise FeatureError('--ssd-lambda must be in (0, 1]')
    if ssd_mode is not None and ssd_mode not in SSD_MODES:
        raise FeatureError(f'--ssd-mode must be {" or ".join(SSD_MODES)}, got {ssd_mode!r}')

    # The preset already says "-ssd1"; any other way of asking says "-ssd". The default mode and
    # lambda leave the name alone, so "--ssd-mode=official" names the same run as "--ssd=1".
    suffix = '' if preset_ssd else '-ssd'
    if ssd_mode == 'joint':
        suffix += '-ssdjoint'
    if ssd_lambda is not None:
        suffix += f'-ssdlambda{ssd_lambda:g}'
    return SSDChoice(enabled=True, mode=ssd_mode or SSD_MODES[0],
                     ssd_lambda=SSD_DEFAULT_LAMBDA if ssd_lambda is None else ssd_lambda,
                     suffix=suffix, flag=asked_by[0])


def check_ssd_data(choice: SSDChoice, resolution: int, channels: int | None = None) -> None:
    """The branch's needs: a radial spectrum with some rings, and images it can turn grayscale."""
    if not choice.enabled:
        return
    if resolution < SSD_MIN_RESOLUTION:
        raise FeatureError(f'{choice.flag} needs a resolution of at least {SSD_MIN_RESOLUTION} '
                           f'(for the radial spectrum); the dataset is {resolution}x{resolution}')
    if channels is not None and channels not in (1, 3):
        raise FeatureError(f'{choice.flag} needs grayscale or RGB images; the dataset has {channels} channels')


def wrap_discriminator(D_kwargs: dict, choice: SSDChoice) -> dict:
    """D_kwargs around SSDDiscriminator when the branch is on (else D_kwargs itself)."""
    if not choice.enabled:
        return D_kwargs
    return type(D_kwargs)(class_name=f'{SSDDiscriminator.__module__}.{SSDDiscriminator.__qualname__}',
                          spatial_kwargs=D_kwargs, mode=choice.mode, ssd_lambda=choice.ssd_lambda)


# ---------------------------------------------------------------------------------------------------
# Frequency-shifted synthesis.

# --freq-shift presets: name -> (mode, carriers).
FREQ_SHIFT_PRESETS = {
    'out': ('out', (OUT_CARRIER,)),
    'fsg16': ('fsg', FSG16_CARRIERS),
    'noshift16': ('noshift', FSG16_CARRIERS),
    'learn16': ('learn', FSG16_CARRIERS),
}


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
    return check_carriers(pairs)


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
    if key in FREQ_SHIFT_PRESETS:
        mode, carriers = FREQ_SHIFT_PRESETS[key]
        return dict(mode=mode, carriers=[list(c) for c in carriers])
    if ',' not in key and re.match(r'[a-z]', key):
        raise ValueError(f'{text!r} is neither none, {", ".join(FREQ_SHIFT_PRESETS)} nor a carrier list such as 1/16,0;0,1/16')
    return dict(mode='fsg', carriers=[list(c) for c in parse_carriers(str(text))])


def freq_shift_desc(text):
    """Run-directory suffix for a --freq-shift value: 'fsg16', 'out', ..., 'fsgcustom'; None for none."""
    spec = parse_freq_shift(text)
    if spec is None:
        return None
    key = str(text).strip().lower()
    return key if key in FREQ_SHIFT_PRESETS else 'fsgcustom'


def freq_shift_G_kwargs(G_kwargs, mode, carriers=None, **options):
    """Wrap a generator's class_name + kwargs into FrequencyShiftedGenerator kwargs (a new dict)."""
    base_kwargs = EasyDict(G_kwargs)
    if 'class_name' not in base_kwargs:
        raise ValueError('G_kwargs must name the base generator with class_name')
    return EasyDict(class_name=f'{FrequencyShiftedGenerator.__module__}.{FrequencyShiftedGenerator.__qualname__}', base_kwargs=base_kwargs, mode=mode,
                    carriers=None if carriers is None else [list(map(float, c)) for c in carriers], **options)


@dataclasses.dataclass(frozen=True)
class FreqShiftChoice:
    value: str | None
    spec: dict | None = None      # freqshift.parse_freq_shift's dict(mode, carriers); None = no shift
    suffix: str = ''

    @property
    def enabled(self) -> bool:
        return self.spec is not None


def freq_shift_choice(value) -> FreqShiftChoice:
    """Interpret --freq-shift (None or 'none' = off)."""
    try:
        spec = parse_freq_shift(value)
    except ValueError as err:
        raise FeatureError(f'--freq-shift: {err}') from None
    if spec is None:
        return FreqShiftChoice(value=value)
    return FreqShiftChoice(value=value, spec=spec, suffix=f'-{freq_shift_desc(value)}')


def check_freq_shift_data(choice: FreqShiftChoice, resolution: int) -> None:
    # The output shift has no branches, so it works at any size.
    if choice.enabled and choice.spec['mode'] != 'out' and resolution < FSG_MIN_RESOLUTION:
        raise FeatureError(f'--freq-shift={choice.value} needs a resolution of at least {FSG_MIN_RESOLUTION} '
                           f'(its branches start from the R/4 feature map)')


def wrap_generator(G_kwargs: dict, choice: FreqShiftChoice) -> dict:
    """G_kwargs around FrequencyShiftedGenerator when a shift is asked for (else G_kwargs itself)."""
    if not choice.enabled:
        return G_kwargs
    return type(G_kwargs)(freq_shift_G_kwargs(G_kwargs, **choice.spec))


# ---------------------------------------------------------------------------------------------------
# Both, as the front ends call them.

def configure(desc: str, G_kwargs: dict, D_kwargs: dict, *, resolution: int, channels: int | None = None,
              preset_ssd=False, ssd=None, ssd_lambda=None, ssd_mode=None, freq_shift=None):
    """Check and apply every feature flag; returns (desc, G_kwargs, D_kwargs), the kwargs wrapped
    as needed and desc extended with the features' run-directory suffixes (SSD first).

    `preset_ssd` is --cfg=ssd (whose preset name already reads "-ssd1"); `ssd` is the --ssd switch
    (None when not given); `channels` is the dataset's channel count when known.
    """
    branch = ssd_choice(preset_ssd=preset_ssd, ssd=ssd, ssd_lambda=ssd_lambda, ssd_mode=ssd_mode)
    shift = freq_shift_choice(freq_shift)
    check_ssd_data(branch, int(resolution), channels)
    check_freq_shift_data(shift, int(resolution))
    return (desc + branch.suffix + shift.suffix,
            wrap_generator(G_kwargs, shift),
            wrap_discriminator(D_kwargs, branch))


# ---------------------------------------------------------------------------------------------------
# A combination the measurements show to fail.

# README, "Does it work, seed after seed?": with upstream's anti-aliased D the output shift ended
# beside a (15,15)/32 carrier on 1 of 5 seeds at 10 kimg and 1 of 2 at 20 kimg; without D's low-pass
# it ended on it on every seed (5 of 5 at 10 and at 20 kimg).
OUT_SHIFT_RISK = ('--freq-shift=out with an anti-aliased discriminator can land next to the data\'s frequency '
                  'instead of on it (1 of 5 seeds at 10 kimg and 1 of 2 at 20 kimg in the README\'s measurement, '
                  '"Frequency-shifted synthesis")')


def out_shift_meets_lowpass(G_kwargs: dict, D_kwargs: dict) -> bool:
    """Whether the output shift trains against a D (the spatial one, inside an SSD wrapper) that
    low-passes before each downsampling."""
    spatial = D_kwargs.get('spatial_kwargs', D_kwargs)
    return G_kwargs.get('mode') == 'out' and spatial.get('block_kwargs', {}).get('resample_filter') != [1]
