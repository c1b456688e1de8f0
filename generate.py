"""Generate images from a trained network (stylefreq or upstream StyleGAN2-ADA pickle).

    python generate.py --outdir=out --seeds=0-3 --network=network-snapshot-000100.pkl
    python generate.py --outdir=out --seeds=10,11 --trunc=0.7 --class=2 --network=https://.../cifar10.pkl

Writes `<outdir>/seed<NNNN>.png`, one image per seed, like upstream's generate.py.
"""

import os
import re
import sys

import click
import numpy as np
import PIL.Image
import torch

from stylefreq import checkpoint


def parse_range(text):
    """'0-3,7,10-11' -> [0, 1, 2, 3, 7, 10, 11]."""
    values = []
    for part in str(text).split(','):
        part = part.strip()
        m = re.fullmatch(r'(\d+)-(\d+)', part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ValueError(f'range {part!r} is empty')
            values.extend(range(lo, hi + 1))
        elif re.fullmatch(r'\d+', part):
            values.append(int(part))
        else:
            raise ValueError(f'{part!r} is not a number or a range like 0-3')
    return values


def _seeds_option(ctx, param, value):
    if value is None:
        return None
    try:
        return parse_range(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def load_generator(network, device, verbose=True):
    """G_ema from a pickle path/URL, with every failure as one ClickException sentence."""
    try:
        data = checkpoint.load_network_pkl(network, verbose=verbose)
    except (OSError, checkpoint.CheckpointError) as e:
        raise click.ClickException(str(e)) from None
    G = data.get('G_ema')
    if not isinstance(G, torch.nn.Module):
        raise click.ClickException(f'{network} holds no generator (G_ema) that stylefreq can run')
    return G.to(device).eval().requires_grad_(False)


def generate_images(G, seeds, truncation_psi=1.0, noise_mode='const', class_idx=None, device='cpu'):
    """Yield (seed, uint8 HWC array) for each seed; z is drawn from numpy's RandomState(seed) like upstream."""
    label = torch.zeros([1, G.c_dim], device=device)
    if G.c_dim != 0:
        if class_idx is None:
            raise click.ClickException(f'this network is conditional ({G.c_dim} classes): choose one with --class')
        if not 0 <= class_idx < G.c_dim:
            raise click.ClickException(f'--class={class_idx} is out of range for a network with {G.c_dim} classes')
        label[:, class_idx] = 1
    elif class_idx is not None:
        print('warning: --class is ignored, the network is unconditional', file=sys.stderr)
    force_fp32 = torch.device(device).type != 'cuda'
    for seed in seeds:
        z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).to(device)
        img = G(z, label, truncation_psi=truncation_psi, noise_mode=noise_mode, force_fp32=force_fp32)
        img = (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].cpu().numpy()
        yield seed, img


def save_png(array, path):
    if array.shape[2] == 1:
        PIL.Image.fromarray(array[:, :, 0], 'L').save(path)
    else:
        PIL.Image.fromarray(array, 'RGB').save(path)


@click.command()
@click.option('--network', 'network_pkl', help='Network pickle path or URL', required=True, metavar='PATH|URL')
@click.option('--seeds', callback=_seeds_option, help='Random seeds, e.g. 0-3,7', required=True, metavar='LIST')
@click.option('--trunc', 'truncation_psi', type=float, default=1, show_default=True, help='Truncation psi')
@click.option('--class', 'class_idx', type=click.IntRange(min=0), help='Class label (conditional networks)')
@click.option('--noise-mode', type=click.Choice(['const', 'random', 'none']), default='const', show_default=True)
@click.option('--outdir', type=click.Path(file_okay=False), required=True, metavar='DIR', help='Where to save images')
@click.option('--device', default=None, help='torch device [default: cuda if available, else cpu]')
def main(network_pkl, seeds, truncation_psi, class_idx, noise_mode, outdir, device):
    """Generate images using a pretrained network pickle."""
    device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    print(f'Loading networks from "{network_pkl}"...')
    G = load_generator(network_pkl, device)
    os.makedirs(outdir, exist_ok=True)
    for i, (seed, img) in enumerate(generate_images(G, seeds, truncation_psi, noise_mode, class_idx, device)):
        print(f'Generating image for seed {seed} ({i + 1}/{len(seeds)}) ...')
        save_png(img, os.path.join(outdir, f'seed{seed:04d}.png'))


if __name__ == '__main__':
    main()
