"""Generate images from a network pickle (stylefreq or StyleGAN2-ADA), one PNG per seed.

    python generate.py --outdir=out --seeds=0-3 --network=network-snapshot-000100.pkl
    python generate.py --outdir=out --seeds=10,11 --trunc=0.7 --class=2 --network=https://.../cifar10.pkl

Writes `<outdir>/seed<NNNN>.png`, like upstream's generate.py: z for seed s is
`np.random.RandomState(s).randn(1, z_dim)`.
"""

import math
import os
import re

import click
import numpy as np
import PIL.Image
import torch

from stylefreq import checkpoint

MAX_SEEDS = 1_000_000


def parse_range(text):
    """'0-3,7,10-11' -> [0, 1, 2, 3, 7, 10, 11] (seeds are numpy seeds: 0 <= s < 2**32)."""
    seeds = []
    for item in str(text).split(','):
        item = item.strip()
        bounds = re.fullmatch(r'(\d+)(?:-(\d+))?', item)
        if bounds is None:
            raise ValueError(f'{item!r} is not a number or a range like 0-3')
        first = int(bounds.group(1))
        last = first if bounds.group(2) is None else int(bounds.group(2))
        if last < first:
            raise ValueError(f'range {item!r} is empty')
        if last >= 2 ** 32:
            raise ValueError(f'seed {last} is too large (seeds are below 2**32)')
        if len(seeds) + (last - first + 1) > MAX_SEEDS:
            raise ValueError(f'more than {MAX_SEEDS:,} seeds')
        seeds.extend(range(first, last + 1))
    return seeds


class SeedList(click.ParamType):
    name = 'LIST'

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        try:
            return parse_range(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


class FiniteFloat(click.ParamType):
    name = 'FLOAT'

    def convert(self, value, param, ctx):
        try:
            x = float(value)
        except (TypeError, ValueError):
            self.fail(f'{value!r} is not a number', param, ctx)
        if not math.isfinite(x):
            self.fail(f'{value!r} is not a finite number', param, ctx)
        return x


def pick_device(name):
    """The torch device to run on: `name` if usable, else a one-sentence ClickException."""
    if name is None:
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise click.BadParameter(f'{name!r} is not a torch device (cpu, cuda, cuda:1, ...)',
                                 param_hint='--device') from None
    if device.type == 'cuda':
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if device.index is not None and device.index >= count or count == 0:
            raise click.BadParameter(f'{name} is not available (this machine has {count} CUDA devices)',
                                     param_hint='--device')
    elif device.type != 'cpu':
        try:
            torch.empty(1, device=device)
        except (RuntimeError, AssertionError):
            raise click.BadParameter(f'{name} is not available on this machine', param_hint='--device') from None
    return device


def load_generator(network, device, verbose=True):
    """G_ema of a network pickle (path or URL), every failure as one ClickException sentence."""
    try:
        data = checkpoint.load_network_pkl(network, verbose=verbose)
    except (OSError, checkpoint.CheckpointError) as e:
        raise click.ClickException(str(e)) from None
    G = data.get('G_ema')
    if not isinstance(G, torch.nn.Module):
        raise click.ClickException(f'{network} holds no generator (G_ema) that stylefreq can run')
    return G.to(device).eval().requires_grad_(False)


def label_for(G, class_idx, device):
    """The one-hot label row for `class_idx` (zeros for an unconditional network)."""
    c = torch.zeros([1, G.c_dim], device=device)
    if G.c_dim == 0:
        if class_idx is not None:
            click.echo('warning: --class is ignored, the network is unconditional', err=True)
        return c
    if class_idx is None:
        raise click.ClickException(f'this network is conditional ({G.c_dim} classes): choose one with --class')
    if class_idx >= G.c_dim:
        raise click.ClickException(f'--class={class_idx} is out of range for a network with {G.c_dim} classes')
    c[0, class_idx] = 1
    return c


@torch.no_grad()
def generate_images(G, seeds, truncation_psi=1.0, noise_mode='const', class_idx=None, device='cpu'):
    """Yield (seed, uint8 HWC array) per seed."""
    c = label_for(G, class_idx, device)
    on_cpu = torch.device(device).type != 'cuda'      # fp16 blocks run in fp32 off the GPU
    for seed in seeds:
        z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).to(device)
        img = G(z, c, truncation_psi=truncation_psi, noise_mode=noise_mode, force_fp32=on_cpu)
        pixels = (img[0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
        yield seed, pixels.cpu().numpy()


def save_png(array, path):
    mode = 'L' if array.shape[2] == 1 else 'RGB'
    PIL.Image.fromarray(array[:, :, 0] if mode == 'L' else array, mode).save(path)


def check_outdir(outdir):
    """Fail before any work if `outdir` cannot become a writable directory."""
    path = os.path.abspath(outdir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise click.BadParameter(f'{outdir} exists and is not a directory', param_hint='--outdir')
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise click.BadParameter(f'cannot create or write {outdir} ({existing} is not a writable directory)',
                                 param_hint='--outdir')


def make_outdir(outdir):
    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as e:
        raise click.BadParameter(f'cannot create {outdir}: {e.strerror or e}', param_hint='--outdir') from None


@click.command()
@click.option('--network', 'network_pkl', required=True, metavar='PATH|URL', help='Network pickle path or URL')
@click.option('--seeds', type=SeedList(), required=True, help='Random seeds, e.g. 0-3,7')
@click.option('--trunc', 'truncation_psi', type=FiniteFloat(), default=1.0, show_default=True, help='Truncation psi')
@click.option('--class', 'class_idx', type=click.IntRange(min=0), metavar='INT', help='Class label (conditional networks)')
@click.option('--noise-mode', type=click.Choice(['const', 'random', 'none']), default='const', show_default=True,
              help='Noise inputs of the synthesis layers')
@click.option('--outdir', required=True, metavar='DIR', help='Where to save images')
@click.option('--device', default=None, metavar='DEVICE', help='torch device [default: cuda if available, else cpu]')
def main(network_pkl, seeds, truncation_psi, class_idx, noise_mode, outdir, device):
    """Generate images using a pretrained network pickle."""
    device = pick_device(device)
    check_outdir(outdir)
    click.echo(f'Loading networks from "{network_pkl}"...')
    G = load_generator(network_pkl, device)
    make_outdir(outdir)
    images = generate_images(G, seeds, truncation_psi, noise_mode, class_idx, device)
    for i, (seed, img) in enumerate(images):
        click.echo(f'Generating image for seed {seed} ({i + 1}/{len(seeds)}) ...')
        path = os.path.join(outdir, f'seed{seed:04d}.png')
        try:
            save_png(img, path)
        except OSError as e:
            raise click.ClickException(f'cannot write {path}: {e.strerror or e}') from None


if __name__ == '__main__':
    main()
