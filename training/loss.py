"""StyleGAN2 loss: non-saturating logistic GAN loss, lazy R1 and path-length regularisation.

Written from a specification of the mathematics, not from upstream's code. The training loop calls

    loss.accumulate_gradients(phase=..., real_img=..., real_c=..., gen_z=..., gen_c=..., gain=...)

once per batch-GPU chunk and phase; the call back-propagates into whatever parameters require
gradients (the loop enables the phase's network only). Phases: 'Gmain', 'Greg', 'Gboth' (the
generator's loss, its path-length penalty, or both) and 'Dmain', 'Dreg', 'Dboth' (likewise with
R1). `gain` is the phase's interval: lazy regularisation runs every k steps with its loss times k.

Terms, each with its own backward pass, in this order:
    G main   softplus(-D(aug(G(z))))
    G pl     pl_weight * (|J_w^T eps| - pl_mean)^2 on the first N / pl_batch_shrink latents
    D fake   softplus(D(aug(G(z))))                    [+ D.aux_loss(aug(G(z)), c, real=False)]
    D real   softplus(-D(aug(x))) + r1_gamma/2 |d D(aug(x)) / dx|^2
                                                       [+ D.aux_loss(aug(x), c, real=True)]
Random draws happen in a fixed order (style-mixing cutoff, its probability draw, the mixing z,
per-layer synthesis noise, augmentation of fakes, then of reals), so a seeded call reproduces
upstream's numbers. There is no DistributedDataParallel here: the loop all-reduces gradients
itself after each phase, so `sync` is accepted and ignored.

A discriminator may define `aux_loss(img, c, real) -> [N] or None` (the SSD-GAN classifier does);
it is added to the D terms on exactly the images D scored.
"""

import numpy as np
import torch
import torch.nn.functional as F

from stylefreq.upstream import d_aux_loss
from training import training_stats

PHASES = ('Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth')


class Loss:
    """What the training loop needs from a loss."""

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, sync=True):
        raise NotImplementedError


class StyleGAN2Loss(Loss):
    def __init__(self, device, G_mapping, G_synthesis, D, augment_pipe=None, style_mixing_prob=0.9, r1_gamma=10,
                 pl_batch_shrink=2, pl_decay=0.01, pl_weight=2):
        super().__init__()
        self.device = device
        self.G_mapping, self.G_synthesis, self.D, self.augment_pipe = G_mapping, G_synthesis, D, augment_pipe
        self.style_mixing_prob, self.r1_gamma = style_mixing_prob, r1_gamma
        self.pl_batch_shrink, self.pl_decay, self.pl_weight = pl_batch_shrink, pl_decay, pl_weight
        # Running mean of the path lengths (the penalty's target); the loop saves it with a snapshot.
        self.pl_mean = torch.zeros([], device=device)
        # Optional callable given every batch of generated images of the G main term (the training
        # loop's spectral monitor): it sees what G made without an extra generator pass.
        self.observe_fakes = None

    # -- forward passes -----------------------------------------------------------------------------

    def _mixed_ws(self, z, c):
        """Mapped ws; with style mixing, the layers from a random cutoff on come from a second z."""
        ws = self.G_mapping(z, c)
        if self.style_mixing_prob <= 0:
            return ws
        num_ws = ws.shape[1]
        # All three draws happen whether or not this batch mixes, which keeps the RNG stream fixed.
        cutoff = torch.randint(1, num_ws, [], device=ws.device)
        no_mixing = torch.rand([], device=ws.device) >= self.style_mixing_prob
        cutoff = cutoff.masked_fill(no_mixing, num_ws)
        second = self.G_mapping(torch.randn(z.shape, dtype=z.dtype, device=z.device), c, skip_w_avg_update=True)
        from_second = torch.arange(num_ws, device=ws.device).reshape(1, num_ws, 1) >= cutoff
        return torch.where(from_second, second, ws)

    def run_G(self, z, c, sync=True):
        """(images, ws) for latents z and labels c; updates w_avg when the mapping is in training mode."""
        ws = self._mixed_ws(z, c)
        return self.G_synthesis(ws), ws

    def _augment_and_score(self, img, c):
        seen = img if self.augment_pipe is None else self.augment_pipe(img)
        return self.D(seen, c), seen

    def run_D(self, img, c, sync=True):
        """Logits [N, 1] of the (augmented) images."""
        return self._augment_and_score(img, c)[0]

    def _with_aux(self, loss, img, c, real):
        """loss [N, 1] plus the discriminator's auxiliary loss on the images it scored, if any.

        The auxiliary term is reported as Loss/D/aux_real or Loss/D/aux_fake (stylefreq's names;
        upstream has no such hook).
        """
        aux = d_aux_loss(self.D, img, c, real)
        if not isinstance(aux, torch.Tensor):
            return loss
        training_stats.report('Loss/D/aux_real' if real else 'Loss/D/aux_fake', aux)
        return loss + aux.reshape(loss.shape)

    # -- the phases ---------------------------------------------------------------------------------

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, sync=True):
        if phase not in PHASES:
            raise ValueError(f'unknown loss phase {phase!r}; expected one of {", ".join(PHASES)}')
        generator_main = phase in ('Gmain', 'Gboth')
        path_length = phase in ('Greg', 'Gboth') and self.pl_weight != 0
        discriminator_main = phase in ('Dmain', 'Dboth')
        r1 = phase in ('Dreg', 'Dboth') and self.r1_gamma != 0

        if generator_main:
            self._generator_main(gen_z, gen_c, gain)
        if path_length:
            self._path_length(gen_z, gen_c, gain)
        fake_loss = None
        if discriminator_main:
            fake_loss = self._discriminator_fake(gen_z, gen_c, gain)
        if discriminator_main or r1:
            self._discriminator_real(real_img, real_c, gain, fake_loss=fake_loss, r1=r1)

    def _generator_main(self, gen_z, gen_c, gain):
        fake, _ = self.run_G(gen_z, gen_c)
        if self.observe_fakes is not None:
            self.observe_fakes(fake.detach())
        logits, _ = self._augment_and_score(fake, gen_c)
        training_stats.report('Loss/scores/fake', logits)
        training_stats.report('Loss/signs/fake', logits.sign())
        loss = F.softplus(-logits)                       # non-saturating: -log sigmoid(D(G(z)))
        training_stats.report('Loss/G/loss', loss)
        (loss.mean() * gain).backward()

    def _path_length(self, gen_z, gen_c, gain):
        count = gen_z.shape[0] // self.pl_batch_shrink
        fake, ws = self.run_G(gen_z[:count], gen_c[:count])
        # A random image-space direction of unit expected squared norm per pixel position.
        direction = torch.randn_like(fake) / np.sqrt(fake.shape[2] * fake.shape[3])
        (jvp,) = torch.autograd.grad(outputs=[(fake * direction).sum()], inputs=[ws], create_graph=True)
        lengths = jvp.square().sum(dim=2).mean(dim=1).sqrt()
        target = torch.lerp(self.pl_mean, lengths.mean(), self.pl_decay)
        self.pl_mean.copy_(target.detach())
        penalty = (lengths - target).square()           # the target stays in the graph (its 1 % share)
        training_stats.report('Loss/pl_penalty', penalty)
        reg = penalty * self.pl_weight
        training_stats.report('Loss/G/reg', reg)
        # 0 * pixel: a non-finite image makes the loss non-finite, as in upstream.
        ((fake[:, 0, 0, 0] * 0 + reg).mean() * gain).backward()

    def _discriminator_fake(self, gen_z, gen_c, gain):
        fake, _ = self.run_G(gen_z, gen_c)
        logits, seen = self._augment_and_score(fake, gen_c)
        training_stats.report('Loss/scores/fake', logits)
        training_stats.report('Loss/signs/fake', logits.sign())
        loss = self._with_aux(F.softplus(logits), seen, gen_c, real=False)
        (loss.mean() * gain).backward()
        return loss.detach()

    def _discriminator_real(self, real_img, real_c, gain, fake_loss, r1):
        """The real-image term (when fake_loss is given: the D main phase) and/or R1, one backward."""
        # R1 differentiates w.r.t. the reals before augmentation (through the augment pipe).
        reals = real_img.detach().requires_grad_(r1)
        logits, seen = self._augment_and_score(reals, real_c)
        training_stats.report('Loss/scores/real', logits)
        training_stats.report('Loss/signs/real', logits.sign())

        total = logits * 0                               # keeps a non-finite logit visible, as upstream
        if fake_loss is not None:
            loss = self._with_aux(F.softplus(-logits), seen, real_c, real=True)
            training_stats.report('Loss/D/loss', fake_loss + loss)
            total = total + loss
        if r1:
            (grad,) = torch.autograd.grad(outputs=[logits.sum()], inputs=[reals], create_graph=True)
            penalty = grad.square().sum(dim=[1, 2, 3])
            training_stats.report('Loss/r1_penalty', penalty)
            reg = penalty * (self.r1_gamma / 2)
            training_stats.report('Loss/D/reg', reg)
            # [N, 1] like the logits, so the mean is mean(loss) + mean(reg) (upstream broadcasts
            # [N, 1] + [N] to [N, N], which has the same mean).
            total = total + reg.unsqueeze(1)
        (total.mean() * gain).backward()
