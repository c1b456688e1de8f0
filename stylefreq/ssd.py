"""SSD-GAN's spectral discriminator branch (Chen et al., AAAI 2021) as a wrapper around any
discriminator: `SSDDiscriminator` holds the spatial D (`self.spatial`, built from its own class_name
and kwargs) and a `SpectralClassifier` on the reduced spectrum phi(x) (stylefreq.spectral.ssd_feature),
and returns one logit per image, [N, 1], so any loss written for a plain D runs unchanged:

  D_kwargs = dict(class_name='stylefreq.ssd.SSDDiscriminator', mode='official', ssd_lambda=0.5,
                  spatial_kwargs=dict(class_name='training.networks.Discriminator', channel_base=...))

Modes (their logits, R1's effective strength and how C is trained: README, "Spectral
discriminator branch"): 'official', the authors' training, where C sees detached images and is
trained by its hinge loss through the `aux_loss(img, c, real)` hook; 'joint', everything
differentiable. phi sees exactly the (augmented) image D scores; C ignores labels.
`inner_prefixes = ('spatial.',)` lets a plain discriminator's tensors load into the wrapper
(training.resume.copy_weights); extra constructor keywords go to the spatial D.
"""

import math

import torch

from stylefreq import spectral
from stylefreq.kwargs import construct_class_by_name
from stylefreq.persistence import persistent_class

MODES = ('official', 'joint')


@persistent_class
class SpectralClassifier(torch.nn.Module):
    """C: a spectrally normalised linear layer, phi [N, in_features] -> one logit [N, 1].

    Spectral normalisation divides the weight by its largest singular value. The weight here is a
    single row, whose only singular value is its L2 norm, so the normalisation is exactly
    w / ||w||_2: no power-iteration buffers, identical in train and eval mode and on every rank. (One
    power iteration, as in SSD-GAN's SNLinear, already yields this value for a one-row matrix.)
    Initialisation as SSD-GAN's models: Xavier-uniform weight (gain 1), PyTorch's default Linear bias.
    """

    def __init__(self, in_features, bias=True):
        super().__init__()
        if int(in_features) < 1:
            raise ValueError(f'SpectralClassifier: in_features must be positive, got {in_features}')
        self.in_features = int(in_features)
        self.weight = torch.nn.Parameter(torch.empty(1, self.in_features))
        torch.nn.init.xavier_uniform_(self.weight, gain=1.0)
        if bias:
            bound = 1 / math.sqrt(self.in_features)
            self.bias = torch.nn.Parameter(torch.empty(1).uniform_(-bound, bound))
        else:
            self.register_parameter('bias', None)

    def normalized_weight(self):
        return self.weight / self.weight.norm()

    def forward(self, phi):
        if phi.ndim != 2 or phi.shape[1] != self.in_features:
            raise ValueError(f'SpectralClassifier: expected features [N, {self.in_features}], got {list(phi.shape)}')
        w = self.normalized_weight().to(phi.dtype)
        return torch.nn.functional.linear(phi, w, None if self.bias is None else self.bias.to(phi.dtype))

    def extra_repr(self):
        return f'in_features={self.in_features}, bias={self.bias is not None}, spectral_norm=exact'


@persistent_class
class SSDDiscriminator(torch.nn.Module):
    """Spatial discriminator + SSD-GAN spectral classifier; `forward(img, c)` -> logits [N, 1].

    Arguments: c_dim, img_resolution, img_channels (passed on to the spatial D, as the training loop
    passes them to any D); `spatial_kwargs`: the spatial D's class_name and its own kwargs; `mode`:
    'official' or 'joint' (see the module docstring for the equations); `ssd_lambda`: the weight
    lambda of the spatial logit, in (0, 1]. Extra keywords go to the spatial D.
    """

    inner_prefixes = ('spatial.',)

    def __init__(self, c_dim, img_resolution, img_channels, spatial_kwargs, mode='official', ssd_lambda=0.5,
                 **spatial_overrides):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"SSDDiscriminator: mode must be one of {', '.join(MODES)}, got {mode!r}")
        ssd_lambda = float(ssd_lambda)
        if not 0 < ssd_lambda <= 1:
            raise ValueError(f'SSDDiscriminator: ssd_lambda must be in (0, 1], got {ssd_lambda}')
        if img_channels not in (1, 3):
            raise ValueError(f"SSDDiscriminator: SSD-GAN's spectral feature needs 1 or 3 image channels "
                             f"(grayscale or RGB), got {img_channels}")
        if not isinstance(spatial_kwargs, dict) or not isinstance(spatial_kwargs.get('class_name'), str):
            raise ValueError('SSDDiscriminator: spatial_kwargs must be a dict with the class_name of the spatial '
                             'discriminator and its keyword arguments')
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.mode = mode
        self.ssd_lambda = ssd_lambda
        kwargs = dict(spatial_kwargs)
        kwargs.update(spatial_overrides)
        self.spatial = construct_class_by_name(c_dim=c_dim, img_resolution=img_resolution,
                                               img_channels=img_channels, **kwargs)
        self.num_features = spectral.ssd_feature_size(img_resolution)
        self.classifier = SpectralClassifier(self.num_features)

    def spectral_logits(self, img):
        """C(phi(img)) [N, 1], differentiable w.r.t. img and C (callers decide what to detach)."""
        if img.ndim != 4 or img.shape[1] != self.img_channels:
            raise ValueError(f'SSDDiscriminator: expected images [N, {self.img_channels}, H, W], got {list(img.shape)}')
        return self.classifier(spectral.ssd_feature(img))

    def forward(self, img, c, **block_kwargs):
        spatial_logits = self.spatial(img, c, **block_kwargs)
        if self.mode == 'official':
            with torch.no_grad():       # sg(C(phi(sg(x)))): a per-image constant shift of the logit
                spectral_logits = self.spectral_logits(img.detach())
        else:
            spectral_logits = self.spectral_logits(img)
        lam = self.ssd_lambda
        return spatial_logits * lam + spectral_logits.to(spatial_logits.dtype) * (1 - lam)

    def aux_loss(self, img, c, real):
        """C's hinge loss [N] in 'official' mode ([1 - C]_+ for reals, [1 + C]_+ for fakes); None in 'joint'.

        Only C's parameters receive gradient: the image is detached. `c` is unused (C is unconditional).
        """
        if self.mode != 'official':
            return None
        logits = self.spectral_logits(img.detach())[:, 0]
        return torch.relu(1 - logits) if real else torch.relu(1 + logits)

    def extra_repr(self):
        return f'mode={self.mode!r}, ssd_lambda={self.ssd_lambda:g}, num_features={self.num_features}'
