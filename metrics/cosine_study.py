"""The planar-cosine frequency-bias study (research/freqbias.md §3.6, §4.5), in one command.

    python -m metrics.cosine_study --outdir=study-cosine             # tiny CPU default (minutes)
    make study-cosine                                                 # the same
    python -m metrics.cosine_study --outdir=study128 --resolution=128 --low=3,3 --high=61,61 \\
        --count=50000 --kimg=2000 --cbase=4096 --cmax=512 --zdim=512 --map=8 --batch=32 --samples=10000 --seeds=0,1

Steps:
1. two one-channel cosine datasets I = m cos(2 pi (fx x + fy y)/R + phi), m ~ clip(N(0.5, 0.1^2)),
   phi ~ clip(N(0, (0.2 pi)^2)), one at a low and one at a high carrier, written by
   `dataset_tool.py cosine` (their parameters are in each zip's dataset.json);
2. on each dataset, a baseline StyleGAN2 generator and a frequency-shifted one are trained
   (`--shift=fsg`: FSG branches whose carrier is the dataset's carrier (fx/R, fy/R), so their
   easy low-frequency band sits on it; `--shift=out`: the (-1)^(x+y) output shift);
3. for every run, `--samples` generated images are compared with held-out real images (fresh
   draws from the same distribution) carrier by carrier: W1 and TV between the 128-bin histograms
   of the magnitude (on [0, 1]) and of the phase (on [-pi, pi]) (metrics.carrier_distance). The
   same distances between the training images and the held-out images are the "true" reference:
   what finite samples give for a perfect generator.

Writes <outdir>/cosine_study.json (configuration, distances per dataset, variant and seed, with
means and standard deviations over seeds) and <outdir>/cosine_study.png (the histograms of each
dataset and variant against the real ones, distances in the panel titles). Datasets and finished
runs found in <outdir> are reused, so an interrupted study continues where it stopped.
"""

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch

from metrics import carrier_distance

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parse_pair(text):
    parts = text.split(',')
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f'{text!r} is not a frequency pair FX,FY (cycles per image)')
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a pair of integers FX,FY (cycles per image)') from None


def build_parser():
    ap = argparse.ArgumentParser(prog='python -m metrics.cosine_study', description=__doc__.split('\n\n')[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument('--outdir', required=True, help='Where datasets, runs and results go')
    ap.add_argument('--resolution', type=int, default=16, help='Image size R (power of two, >= 16 for --shift=fsg)')
    ap.add_argument('--low', type=_parse_pair, default=(1, 1), help='Low carrier FX,FY in cycles per image')
    ap.add_argument('--high', type=_parse_pair, default=(7, 7), help='High carrier FX,FY in cycles per image')
    ap.add_argument('--count', type=int, default=2000, help='Training images per dataset')
    ap.add_argument('--shift', choices=['fsg', 'out'], default='fsg',
                    help="Frequency-shifted generator: FSG branches at the dataset's carrier, or the output shift")
    ap.add_argument('--kimg', type=float, default=3, help='Training length per run, thousands of images')
    ap.add_argument('--batch', type=int, default=16, help='Batch size')
    ap.add_argument('--cbase', type=int, default=256, help='channel_base of G and D')
    ap.add_argument('--cmax', type=int, default=32, help='channel_max of G and D')
    ap.add_argument('--zdim', type=int, default=64, help='z and w dimension')
    ap.add_argument('--map', type=int, default=2, help='Mapping network depth')
    ap.add_argument('--lr', type=float, default=0.0025, help='Adam learning rate of G and D')
    ap.add_argument('--gamma', type=float, default=None, help='R1 gamma [default: 0.0002 R^2 / batch, as --cfg=auto]')
    ap.add_argument('--samples', type=int, default=2000, help='Generated and held-out real images per evaluation')
    ap.add_argument('--seeds', default='0', help='Comma-separated training seeds (mean and std over them)')
    ap.add_argument('--device', default=None, help='torch device [default: cuda if available, else cpu]')
    ap.add_argument('--threads', type=int, default=None,
                    help='CPU threads for torch [default: torch\'s choice]; 1 is much faster on a busy machine')
    return ap


# ------------------------------------------------------------------------------------------------
# Data.


def make_dataset(outdir, resolution, freq, count, seed=0):
    """Write (or reuse) a cosine dataset zip through dataset_tool.py; returns its path."""
    path = os.path.join(outdir, 'data', f'cos{resolution}_f{freq[0]}x{freq[1]}_n{count}_s{seed}.zip')
    if os.path.isfile(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tool = os.path.join(_REPO, 'dataset_tool.py')
    if not os.path.isfile(tool):
        raise SystemExit(f'cosine_study: {tool} not found; run the study from a stylefreq checkout')
    tmp = path[:-4] + '.partial.zip'
    if os.path.exists(tmp):
        os.remove(tmp)
    cmd = [sys.executable, tool, 'cosine', f'--dest={tmp}', f'--freqs={freq[0]},{freq[1]}',
           f'--resolution={resolution}', f'--count={count}', f'--seed={seed}']
    proc = subprocess.run(cmd, cwd=_REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f'cosine_study: dataset_tool.py cosine failed:\n{proc.stdout}{proc.stderr}')
    os.replace(tmp, path)
    return path


def load_cosine_dataset(path):
    """(uint8 images [N, R, R], CosineSpec) of a dataset written by `dataset_tool.py cosine`."""
    from training.dataset import ImageFolderDataset
    from training.synthetic import CosineSpec
    ds = ImageFolderDataset(path=path, use_labels=False)
    try:
        record = ds.metadata.get('cosine')
        if record is None:
            raise SystemExit(f'cosine_study: {path} has no "cosine" record in its dataset.json')
        spec = CosineSpec.from_json(record)
        images = np.stack([ds[i][0][0] for i in range(len(ds))])
    finally:
        ds.close()
    return images, spec


def held_out_images(spec, count, seed):
    """Fresh draws from the dataset's distribution (a test set), quantised like the dataset."""
    from training import synthetic
    mags, phases = synthetic.sample_cosine_params(spec, count, seed)
    return synthetic.to_uint8(synthetic.render_cosines(spec, mags, phases))


# ------------------------------------------------------------------------------------------------
# Training.


def training_kwargs(args, data_path, run_dir, seed, freq_shift):
    from stylefreq.kwargs import EasyDict
    R = args.resolution
    G_kwargs = EasyDict(class_name='training.networks.Generator', z_dim=args.zdim, w_dim=args.zdim,
                        mapping_kwargs=EasyDict(num_layers=args.map),
                        synthesis_kwargs=EasyDict(channel_base=args.cbase, channel_max=args.cmax, num_fp16_res=0,
                                                  conv_clamp=None))
    if freq_shift is not None:
        from stylefreq import features
        G_kwargs = features.freq_shift_G_kwargs(G_kwargs, **freq_shift)
    mbstd = min(4, args.batch)
    return EasyDict(
        run_dir=run_dir,
        training_set_kwargs=EasyDict(class_name='training.dataset.ImageFolderDataset', path=data_path,
                                     use_labels=False, max_size=None, xflip=False, resolution=R),
        data_loader_kwargs=EasyDict(pin_memory=False, num_workers=0),
        G_kwargs=G_kwargs,
        D_kwargs=EasyDict(class_name='training.networks.Discriminator', channel_base=args.cbase,
                          channel_max=args.cmax, num_fp16_res=0, conv_clamp=None, block_kwargs=EasyDict(),
                          mapping_kwargs=EasyDict(), epilogue_kwargs=EasyDict(mbstd_group_size=mbstd)),
        G_opt_kwargs=EasyDict(class_name='torch.optim.Adam', lr=args.lr, betas=[0, 0.99], eps=1e-8),
        D_opt_kwargs=EasyDict(class_name='torch.optim.Adam', lr=args.lr, betas=[0, 0.99], eps=1e-8),
        loss_kwargs=EasyDict(class_name='training.loss.StyleGAN2Loss',
                             r1_gamma=args.gamma if args.gamma is not None else 0.0002 * R * R / args.batch),
        augment_kwargs=None, metrics=[], random_seed=seed, num_gpus=1, rank=0,
        batch_size=args.batch, batch_gpu=args.batch, ema_kimg=args.batch * 10 / 32, ema_rampup=0.05,
        total_kimg=args.kimg, kimg_per_tick=max(args.kimg / 4, args.batch / 1000),
        image_snapshot_ticks=10 ** 9, network_snapshot_ticks=10 ** 9,
    )


def final_snapshot(run_dir):
    snaps = sorted(f for f in os.listdir(run_dir) if f.startswith('network-snapshot-') and f.endswith('.pkl')) \
        if os.path.isdir(run_dir) else []
    return os.path.join(run_dir, snaps[-1]) if snaps else None


def train_run(args, data_path, run_dir, seed, freq_shift, device):
    """Train one run (or reuse a finished one); returns its final snapshot path."""
    done_marker = os.path.join(run_dir, 'done.json')
    if os.path.isfile(done_marker):
        return final_snapshot(run_dir)
    from training import training_loop
    os.makedirs(run_dir, exist_ok=True)
    kwargs = training_kwargs(args, data_path, run_dir, seed, freq_shift)
    with open(os.path.join(run_dir, 'training_options.json'), 'w') as f:
        json.dump(kwargs, f, indent=2)
    t0 = time.time()
    with open(os.path.join(run_dir, 'log.txt'), 'w') as log, contextlib.redirect_stdout(log):
        training_loop.training_loop(device=device, **kwargs)
    with open(done_marker, 'w') as f:
        json.dump(dict(seconds=time.time() - t0), f)
    return final_snapshot(run_dir)


@torch.no_grad()
def generate_uint8(snapshot, count, seed, device):
    """`count` uint8 images [count, R, R] from a snapshot's G_ema (random noise, no truncation)."""
    from stylefreq import checkpoint
    from training import synthetic
    G = checkpoint.load_network_pkl(snapshot, verbose=False)['G_ema'].to(device).eval()
    rng = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    out = []
    for start in range(0, count, 256):
        n = min(256, count - start)
        z = torch.randn([n, G.z_dim], generator=rng).to(device)
        c = torch.zeros([n, G.c_dim], device=device)
        img = G(z, c, noise_mode='random', force_fp32=device.type != 'cuda')
        out.append(synthetic.to_uint8(img[:, 0].cpu().numpy()))
    return np.concatenate(out)


# ------------------------------------------------------------------------------------------------
# Results.


def _summary(per_seed):
    """Mean and std over seeds of every distance."""
    out = []
    for k in range(len(per_seed[0])):
        entry = {'freq': per_seed[0][k].get('freq')}
        for quantity in ('magnitude', 'phase'):
            entry[quantity] = {}
            for name in ('w1', 'tv'):
                values = np.array([run[k][quantity][name] for run in per_seed])
                entry[quantity][name] = dict(mean=float(values.mean()), std=float(values.std()))
        out.append(entry)
    return out


def run_study(args):
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    seeds = [int(s) for s in str(args.seeds).split(',') if s.strip()]
    R = args.resolution
    if args.shift == 'fsg' and R < 16:
        raise SystemExit('cosine_study: --shift=fsg needs --resolution >= 16 (branches start at R/4)')
    os.makedirs(args.outdir, exist_ok=True)
    results = dict(config=vars(args).copy(), device=str(device), datasets={})
    results['config']['low'] = list(args.low)
    results['config']['high'] = list(args.high)
    hist_data = {}
    t_start = time.time()
    for label, freq in (('low', args.low), ('high', args.high)):
        print(f'[{label}] dataset: carrier ({freq[0]}, {freq[1]}) cycles per image at {R}x{R}', flush=True)
        data_path = make_dataset(args.outdir, R, freq, args.count)
        train_images, spec = load_cosine_dataset(data_path)
        test_images = held_out_images(spec, args.samples, seed=10 ** 6 + 1)
        ref = carrier_distance.cosine_distances(train_images, test_images, spec)
        print(f'[{label}] true reference (training vs held-out reals): magnitude W1 {ref[0]["magnitude"]["w1"]:.4f} '
              f'TV {ref[0]["magnitude"]["tv"]:.3f} | phase W1 {ref[0]["phase"]["w1"]:.4f} '
              f'TV {ref[0]["phase"]["tv"]:.3f}', flush=True)
        carrier = [freq[0] / R, freq[1] / R]
        if args.shift == 'fsg':
            variants = [('baseline', None), ('fsg', dict(mode='fsg', carriers=[carrier]))]
        else:
            variants = [('baseline', None), ('out', dict(mode='out', carriers=[[0.5, 0.5]]))]
        entry = dict(dataset=os.path.relpath(data_path, args.outdir), freq=list(freq),
                     carrier_cycles_per_pixel=carrier, true_reference=ref, variants={})
        from training.synthetic import estimate_cosine_params
        hist_data[label] = dict(freq=freq, real=estimate_cosine_params(test_images, spec), variants={})
        for name, freq_shift in variants:
            per_seed = []
            for seed in seeds:
                run_dir = os.path.join(args.outdir, 'runs', f'{label}-{name}-seed{seed}')
                t0 = time.time()
                print(f'[{label}] training {name} (seed {seed}) -> {run_dir}', flush=True)
                snapshot = train_run(args, data_path, run_dir, seed, freq_shift, device)
                fake = generate_uint8(snapshot, args.samples, seed=seed, device=device)
                dist = carrier_distance.cosine_distances(test_images, fake, spec)
                per_seed.append(dist)
                d = dist[0]
                print(f'[{label}] {name} seed {seed}: magnitude W1 {d["magnitude"]["w1"]:.4f} TV '
                      f'{d["magnitude"]["tv"]:.3f} | phase W1 {d["phase"]["w1"]:.4f} TV {d["phase"]["tv"]:.3f} '
                      f'({time.time() - t0:.0f}s)', flush=True)
                if seed == seeds[0]:
                    hist_data[label]['variants'][name] = estimate_cosine_params(fake, spec)
            entry['variants'][name] = dict(freq_shift=freq_shift, runs={str(s): d for s, d in zip(seeds, per_seed)},
                                           summary=_summary(per_seed))
        results['datasets'][label] = entry
    results['seconds'] = round(time.time() - t_start, 1)
    json_path = os.path.join(args.outdir, 'cosine_study.json')
    with open(json_path, 'w') as f:
        json.dump(results, f, indent=2)
    png_path = os.path.join(args.outdir, 'cosine_study.png')
    plot_study(hist_data, results, png_path)
    print(f'wrote {json_path} and {png_path}')
    return results


# ------------------------------------------------------------------------------------------------
# Plot (PIL only: matplotlib is not a dependency).

_COLOURS = {'real': (0, 0, 0), 'baseline': (214, 39, 40), 'fsg': (31, 119, 180), 'out': (31, 119, 180)}


def _panel(draw, box, curves, x_range, title, font):
    """Line plot of histogram densities in `box` = (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline=(120, 120, 120))
    draw.text((x0 + 4, y0 - 14), title, fill=(0, 0, 0), font=font)
    top = max(float(np.max(d)) for _, d, _ in curves) * 1.05 or 1.0
    for name, density, colour in curves:
        n = len(density)
        pts = []
        for i, v in enumerate(density):
            px = x0 + (i + 0.5) / n * (x1 - x0)
            py = y1 - float(v) / top * (y1 - y0)
            pts.append((px, py))
        draw.line(pts, fill=colour, width=2)
    lo, hi = x_range
    draw.text((x0, y1 + 2), f'{lo:.2f}', fill=(80, 80, 80), font=font)
    draw.text((x1 - 30, y1 + 2), f'{hi:.2f}', fill=(80, 80, 80), font=font)


def plot_study(hist_data, results, path):
    from PIL import Image, ImageDraw, ImageFont
    font = ImageFont.load_default()
    pw, ph, margin = 380, 200, 44
    rows = list(hist_data)
    width = 2 * pw + 3 * margin
    height = len(rows) * (ph + 2 * margin) + 60
    img = Image.new('RGB', (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.text((margin, 10), 'Planar-cosine study: per-carrier magnitude / phase histograms (held-out real vs generated)',
              fill=(0, 0, 0), font=font)
    legend_x = margin
    for name in ['real'] + list(next(iter(hist_data.values()))['variants']):
        draw.line([(legend_x, 32), (legend_x + 20, 32)], fill=_COLOURS.get(name, (0, 128, 0)), width=3)
        draw.text((legend_x + 24, 26), name, fill=(0, 0, 0), font=font)
        legend_x += 100
    for r, label in enumerate(rows):
        data = hist_data[label]
        y0 = 60 + r * (ph + 2 * margin) + margin
        for c, (quantity, value_range) in enumerate([('magnitude', carrier_distance.MAGNITUDE_RANGE),
                                                     ('phase', carrier_distance.PHASE_RANGE)]):
            idx = 0 if quantity == 'magnitude' else 1
            curves = [('real', carrier_distance.histogram(data['real'][idx][:, 0], value_range)[0], _COLOURS['real'])]
            parts = []
            for name, params in data['variants'].items():
                curves.append((name, carrier_distance.histogram(params[idx][:, 0], value_range)[0],
                               _COLOURS.get(name, (0, 128, 0))))
                s = results['datasets'][label]['variants'][name]['summary'][0][quantity]
                parts.append(f'{name} W1 {s["w1"]["mean"]:.3f} TV {s["tv"]["mean"]:.2f}')
            fx, fy = data['freq']
            ref = results['datasets'][label]['true_reference'][0][quantity]
            x0 = margin + c * (pw + margin)
            draw.text((x0 + 4, y0 - 28), f'{label} carrier ({fx},{fy}), {quantity}; true reference W1 {ref["w1"]:.3f} '
                      f'TV {ref["tv"]:.2f}', fill=(0, 0, 0), font=font)
            _panel(draw, (x0, y0, x0 + pw, y0 + ph), curves, value_range, '; '.join(parts), font)
    img.save(path)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    for label in ('low', 'high'):
        f = getattr(args, label)
        if any(abs(c) > args.resolution // 2 for c in f):
            raise SystemExit(f'cosine_study: --{label}={f[0]},{f[1]} lies outside [-R/2, R/2] for R={args.resolution}')
    run_study(args)


if __name__ == '__main__':
    main()
