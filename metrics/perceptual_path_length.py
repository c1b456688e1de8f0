"""Perceptual path length (Karras et al. 2019) with the VGG16 LPIPS detector.

For each sample: latents z0, z1 (and a label), an interpolation point t (uniform in [0, 1) for
'full' sampling, 0 for 'end'), images at t and t + eps interpolated in Z (slerp) or W (lerp), the
noise buffers redrawn, an optional centre crop (rows 3/8..7/8, columns 2/8..6/8 of the image),
box-downsampling to 256 px when larger, the LPIPS distance d = |phi(x0) - phi(x1)|^2 / eps^2.
PPL is the mean of d over the samples between the 1st and the 99th percentile.
Samples are drawn per global batch from seeded generators, so the result does not depend on the
number of processes.
"""

import copy
import hashlib

import numpy as np
import torch

from . import metric_utils


def slerp(a, b, t):
    """Spherical interpolation between the directions of a and b (rows), t broadcast over rows."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    cos = (a * b).sum(dim=-1, keepdim=True).clamp(-1, 1)
    angle = torch.acos(cos) * t
    ortho = b - cos * a
    ortho = ortho / ortho.norm(dim=-1, keepdim=True)
    out = a * torch.cos(angle) + ortho * torch.sin(angle)
    return out / out.norm(dim=-1, keepdim=True)


def _lpips_distances(G, vgg16, z0, z1, c, t, epsilon, space, crop, G_kwargs):
    if space == 'w':
        w0, w1 = G.mapping(z=torch.cat([z0, z1]), c=torch.cat([c, c])).chunk(2)
        tt = t[:, None, None]
        ws = torch.cat([torch.lerp(w0, w1, tt), torch.lerp(w0, w1, tt + epsilon)])
    else:
        za, zb = slerp(z0, z1, t[:, None]), slerp(z0, z1, t[:, None] + epsilon)
        ws = G.mapping(z=torch.cat([za, zb]), c=torch.cat([c, c]))
    for name, buf in G.named_buffers():
        if name.endswith('.noise_const'):
            buf.copy_(torch.randn_like(buf))
    img = G.synthesis(ws=ws, noise_mode='const', force_fp32=True, **G_kwargs)
    if crop:
        if img.shape[2] != img.shape[3]:
            raise metric_utils.MetricError('cropped PPL needs square images')
        e = img.shape[2] // 8
        img = img[:, :, 3 * e:7 * e, 2 * e:6 * e]
    factor = G.img_resolution // 256
    if factor > 1:
        n, ch, h, w = img.shape
        img = img.reshape([n, ch, h // factor, factor, w // factor, factor]).mean([3, 5])
    img = (img + 1) * 127.5
    if img.shape[1] == 1:
        img = img.repeat([1, 3, 1, 1])
    feats = vgg16(img, resize_images=False, return_lpips=True)
    f0, f1 = feats.chunk(2)
    return (f0 - f1).square().sum(dim=1) / epsilon ** 2


def compute_ppl(opts, num_samples, epsilon, space, sampling, crop, batch_size):
    if space not in ('z', 'w') or sampling not in ('full', 'end'):
        raise ValueError(f'PPL space must be z|w and sampling full|end, got {space!r}, {sampling!r}')
    if opts.G is None:
        raise metric_utils.MetricError('PPL needs a generator network, not a set of images')
    vgg16 = metric_utils.get_feature_detector(metric_utils.detector_url(opts, 'vgg16'), opts.device, opts.num_gpus,
                                              opts.rank, opts.verbose())
    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    c_dim = int(getattr(G, 'c_dim', 0))
    labels = metric_utils.open_dataset(opts.dataset_kwargs) if c_dim > 0 else None
    G_kwargs = {k: v for k, v in opts.G_kwargs.items() if k not in ('noise_mode', 'force_fp32')}
    seed_base = int.from_bytes(hashlib.md5(f'{opts.seed}/ppl'.encode()).digest()[:4], 'little')
    num_batches = (num_samples + batch_size - 1) // batch_size
    task = opts.progress.task('ppl sampling', num_samples)
    devices = [opts.device] if opts.device.type == 'cuda' else []
    dists = []

    def process(g):
        seed = (seed_base * 1_000_003 + g) % (2 ** 31)
        gen = torch.Generator().manual_seed(seed)
        n = min(batch_size, num_samples - g * batch_size)
        z0 = torch.randn([n, G.z_dim], generator=gen)
        z1 = torch.randn([n, G.z_dim], generator=gen)
        t = torch.rand([n], generator=gen) * (1.0 if sampling == 'full' else 0.0)
        if c_dim > 0:
            idx = np.random.RandomState(seed).randint(len(labels), size=n)
            c = torch.from_numpy(np.stack([labels.get_label(int(i)) for i in idx]))
        else:
            c = torch.zeros([n, 0])
        to = lambda x: x.to(opts.device)
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(seed)
            d = _lpips_distances(G, vgg16, to(z0), to(z1), to(c), to(t), epsilon, space, crop, G_kwargs)
        return {'d': d[:, None]}

    def consume(g, out):
        dists.append(out['d'][:, 0].numpy())
        task.update(min((g + 1) * batch_size, num_samples))

    metric_utils.run_distributed(opts, num_batches, process, consume, ['d'])
    dist = np.concatenate(dists)
    lo = np.percentile(dist, 1, method='lower')
    hi = np.percentile(dist, 99, method='higher')
    return float(dist[(dist >= lo) & (dist <= hi)].mean())
