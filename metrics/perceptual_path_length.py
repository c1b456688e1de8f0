"""Perceptual path length (Karras et al. 2019, "A Style-Based Generator Architecture for GANs").

For each sample: two latents z_a, z_b, a position t (uniform in [0, 1) for sampling='full', 0 for
'end') and the positions t and t + eps along the path between them, taken
  space 'z': on the great circle between the directions of z_a and z_b (slerp), then mapped;
  space 'w': on the straight line between their mapped w's (lerp).
Both points are synthesised (constant noise, the noise buffers redrawn per batch), optionally
cropped to the face region (crop=True: rows 3/8..7/8, columns 2/8..6/8, upstream's FFHQ crop),
box-downsampled to at most 256 px, and compared by the LPIPS distance of the VGG16 detector
(`return_lpips=True`). A sample's value is that squared distance / eps^2. The metric is the mean
over the samples between the 1st and 99th percentile (numpy's 'lower' and 'higher' methods).

Samples are drawn per global batch from seeds derived from (opts.seed, g), so the result does not
depend on the number of processes, and the caller's random state is left alone.
"""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import torch
import torch.nn.functional as F

from stylefreq import metric_streams
from . import metric_utils

_MAPPING_KEYS = ('truncation_psi', 'truncation_cutoff')


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Point at fraction t of the great-circle arc from direction a to direction b (unit length)."""
    u = F.normalize(a, dim=-1)
    v = F.normalize(b, dim=-1)
    cos_total = (u * v).sum(dim=-1, keepdim=True).clamp(-1, 1)
    angle = t * torch.acos(cos_total)
    towards_v = F.normalize(v - cos_total * u, dim=-1)    # unit vector orthogonal to u, in the u-v plane
    return F.normalize(torch.cos(angle) * u + torch.sin(angle) * towards_v, dim=-1)


class _PathSampler:
    """Pairs of images eps apart along latent paths, and their LPIPS distances."""

    def __init__(self, opts, epsilon, space, sampling, crop, batch_size, vgg16):
        if space not in ('z', 'w'):
            raise metric_streams.MetricError(f"PPL space must be 'z' or 'w', got {space!r}")
        if sampling not in ('full', 'end'):
            raise metric_streams.MetricError(f"PPL sampling must be 'full' or 'end', got {sampling!r}")
        self.opts = opts
        self.G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
        self.epsilon, self.space, self.sampling, self.crop = float(epsilon), space, sampling, crop
        self.chunk = max(int(batch_size), 1)
        self.vgg16 = vgg16
        self.mapping_kwargs = {k: v for k, v in opts.G_kwargs.items() if k in _MAPPING_KEYS}
        self.synthesis_kwargs = dict(noise_mode='const', force_fp32=True)
        self.synthesis_kwargs.update({k: v for k, v in opts.G_kwargs.items() if k not in _MAPPING_KEYS})
        self.noise_buffers = [buf for name, buf in self.G.named_buffers() if name.endswith('.noise_const')]
        self.labels = None
        c_dim = int(getattr(self.G, 'c_dim', 0))
        if c_dim > 0:
            self.labels = metric_streams.open_dataset(opts.dataset_kwargs)
            if self.labels.label_dim != c_dim:
                raise metric_streams.MetricError(f'the generator is conditional (c_dim={c_dim}) but dataset '
                                               f'{self.labels.name} has label dimension {self.labels.label_dim}')
        digest = hashlib.md5(f'{opts.seed}/ppl'.encode()).digest()
        self.seed_base = int.from_bytes(digest[:4], 'little')

    def batch_seed(self, g: int) -> int:
        return (self.seed_base * 1_000_003 + g) % (2 ** 31)

    def draw(self, g: int, n: int):
        """Latent endpoints, positions and labels of global batch g (n samples)."""
        seed = self.batch_seed(g)
        gen = torch.Generator().manual_seed(seed)
        z_dim = int(self.G.z_dim)
        z_a = torch.randn([n, z_dim], generator=gen)
        z_b = torch.randn([n, z_dim], generator=gen)
        t = torch.rand([n], generator=gen)
        if self.sampling == 'end':
            t = torch.zeros_like(t)
        if self.labels is None:
            c = torch.zeros([n, 0])
        else:
            picks = np.random.RandomState(seed).randint(len(self.labels), size=n)
            c = torch.from_numpy(np.stack([self.labels.get_label(int(i)) for i in picks]))
        return z_a, z_b, t, c, gen

    def ws_at(self, z_a, z_b, t, c):
        """ws [2n, num_ws, w_dim]: the n points at t, then the n points at t + eps."""
        t_near, t_far = t[:, None], t[:, None] + self.epsilon
        c2 = torch.cat([c, c])
        if self.space == 'z':
            z = torch.cat([slerp(z_a, z_b, t_near), slerp(z_a, z_b, t_far)])
            return self.G.mapping(z=z, c=c2, **self.mapping_kwargs)
        w_a, w_b = self.G.mapping(z=torch.cat([z_a, z_b]), c=c2, **self.mapping_kwargs).chunk(2)
        t_near, t_far = t_near[:, :, None], t_far[:, :, None]
        return torch.cat([torch.lerp(w_a, w_b, t_near), torch.lerp(w_a, w_b, t_far)])

    def to_detector_range(self, images):
        if self.crop:
            eighth = images.shape[2] // 8
            images = images[:, :, 3 * eighth:7 * eighth, 2 * eighth:6 * eighth]
        if images.shape[2] > 256:
            f = images.shape[2] // 256
            n, ch, h, w = images.shape
            images = images.reshape(n, ch, h // f, f, w // f, f).mean(dim=(3, 5))
        images = (images + 1) * 127.5
        return images.repeat(1, 3, 1, 1) if images.shape[1] == 1 else images

    def distances(self, g: int, n: int) -> torch.Tensor:
        """[n] squared LPIPS distance / eps^2 of global batch g."""
        device = self.opts.device
        z_a, z_b, t, c, gen = self.draw(g, n)
        with torch.no_grad():
            for buf in self.noise_buffers:
                buf.copy_(torch.randn(buf.shape, generator=gen).to(buf.device, buf.dtype))
            out = []
            for lo in range(0, n, self.chunk):
                hi = min(lo + self.chunk, n)
                part = [x[lo:hi].to(device) for x in (z_a, z_b, t, c)]
                ws = self.ws_at(*part)
                images = self.G.synthesis(ws, **self.synthesis_kwargs).to(torch.float32)
                feats = self.vgg16(self.to_detector_range(images), resize_images=False, return_lpips=True)
                near, far = feats.chunk(2)
                out.append((far - near).square().sum(dim=1) / self.epsilon ** 2)
        return torch.cat(out)


def compute_ppl(opts, num_samples, epsilon, space, sampling, crop, batch_size):
    """PPL over `num_samples` samples; `batch_size` pairs go through G and the detector at a time."""
    if opts.G is None:
        raise metric_streams.MetricError('perceptual path length needs a generator network, not a folder of images')
    url = metric_utils.detector_url(opts, 'vgg16')
    vgg16 = metric_utils.get_feature_detector(url, opts.device, opts.num_gpus, opts.rank, opts.verbose())
    sampler = _PathSampler(opts, epsilon, space, sampling, crop, batch_size, vgg16)
    num_samples = int(num_samples)
    per_batch = opts.batch_size
    num_batches = (num_samples + per_batch - 1) // per_batch
    collected = [None] * num_batches
    task = opts.progress.task('ppl samples', num_samples)

    def process_batch(g):
        n = min(per_batch, num_samples - g * per_batch)
        return {'dist': sampler.distances(g, n)[:, None]}

    def consume(g, out):
        collected[g] = out['dist'][:, 0].numpy()
        task.update(min((g + 1) * per_batch, num_samples))

    devices = [opts.device] if opts.device.type == 'cuda' else []
    with torch.random.fork_rng(devices=devices):
        metric_streams.run_distributed(opts, num_batches, process_batch, consume, ['dist'])
    dist = np.concatenate(collected)
    lo = np.percentile(dist, 1, method='lower')
    hi = np.percentile(dist, 99, method='higher')
    return float(dist[(dist >= lo) & (dist <= hi)].mean())
