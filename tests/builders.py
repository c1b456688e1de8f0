"""Tiny networks, training options and sample grids shared by the tests (the `quick_grids`
fixture in conftest.py installs `small_grid` in the training loop)."""

import os

import numpy as np
import torch

from training import config, networks


def tiny_generator(res=16, c_dim=0, channels=3, z_dim=32, map_layers=2, cbase=256, cmax=32, seed=None,
                   **synthesis_kwargs):
    """A StyleGAN2 generator small enough for a test (z and w of `z_dim`)."""
    if seed is not None:
        torch.manual_seed(seed)
    return networks.Generator(z_dim=z_dim, c_dim=c_dim, w_dim=z_dim, img_resolution=res, img_channels=channels,
                              mapping_kwargs=dict(num_layers=map_layers),
                              synthesis_kwargs=dict(channel_base=cbase, channel_max=cmax, **synthesis_kwargs))


def tiny_discriminator(res=16, c_dim=0, channels=3, cbase=256, cmax=32, seed=None, **kwargs):
    if seed is not None:
        torch.manual_seed(seed)
    return networks.Discriminator(c_dim=c_dim, img_resolution=res, img_channels=channels, channel_base=cbase,
                                  channel_max=cmax, **kwargs)


def tiny_options(run_dir=None, data='builtin:blobs16', z_dim=32, **flags):
    """(desc, options) as train.py makes them for a tiny run (--cbase=256 --cmax=32 --map=2 --batch=8
    --workers=0 --aug=noaug --metrics=none unless `flags` say otherwise), with a small z and w."""
    kwargs = dict(data=data, cbase=256, cmax=32, map=2, batch=8, workers=0, aug='noaug', metrics=[])
    kwargs.update(flags)
    desc, options = config.training_options(**kwargs)
    G = options.G_kwargs.get('base_kwargs', options.G_kwargs)      # a frequency-shifted G wraps the base
    G.z_dim = G.w_dim = z_dim
    if run_dir is not None:
        options.run_dir = str(run_dir)
        os.makedirs(run_dir, exist_ok=True)
    return desc, options


def small_grid(training_set, random_seed=0):
    """A 4x2 sample grid of the first 8 images (the real grid is up to 32x32 images: rendering it
    would take most of a short in-process test)."""
    images, labels = zip(*[training_set[i] for i in range(8)])
    return (4, 2), np.stack(images), np.stack(labels)
