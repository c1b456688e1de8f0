"""StyleGAN2 loss: non-saturating logistic, lazy R1 and path-length regularisation, style mixing.

`StyleGAN2Loss` takes upstream's constructor arguments (`loss_kwargs.class_name =
'training.loss.StyleGAN2Loss'`, r1_gamma, pl_weight, ...) and upstream's defaults.

Discriminator hook. A discriminator may define

    aux_loss(img, c, real: bool) -> Tensor [N] or None

The loss calls it in the D main phase on exactly the (augmented) images the discriminator scored,
once for the fakes and once for the reals, and adds the result to the D loss. This is how a
wrapper such as SSD-GAN's spectral classifier trains its own head without a special loss class;
a discriminator without the method is trained exactly as upstream trains it.
"""

import math

import torch
import torch.nn.functional as F

from training import training_stats

PHASES = ('Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth')


class Loss:
    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain):
        raise NotImplementedError


def _unwrap(module):
    return module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module


class StyleGAN2Loss(Loss):
    def __init__(self, device, G_mapping, G_synthesis, D, augment_pipe=None, style_mixing_prob=0.9, r1_gamma=10,
                 pl_batch_shrink=2, pl_decay=0.01, pl_weight=2):
        super().__init__()
        self.device = device
        self.G_mapping = G_mapping
        self.G_synthesis = G_synthesis
        self.D = D
        self.augment_pipe = augment_pipe
        self.style_mixing_prob = style_mixing_prob
        self.r1_gamma = r1_gamma
        self.pl_batch_shrink = pl_batch_shrink
        self.pl_decay = pl_decay
        self.pl_weight = pl_weight
        self.pl_mean = torch.zeros([], device=device)

    def run_G(self, z, c):
        ws = self.G_mapping(z, c)
        if self.style_mixing_prob > 0:
            # With probability style_mixing_prob, the ws from a random cutoff onwards come from a second z.
            cutoff = torch.empty([], dtype=torch.int64, device=ws.device).random_(1, ws.shape[1])
            cutoff = torch.where(torch.rand([], device=ws.device) < self.style_mixing_prob, cutoff,
                                 torch.full_like(cutoff, ws.shape[1]))
            ws[:, cutoff:] = self.G_mapping(torch.randn_like(z), c, skip_w_avg_update=True)[:, cutoff:]
        return self.G_synthesis(ws), ws

    def run_D(self, img, c):
        """Logits and the image the discriminator actually saw (after augmentation)."""
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return self.D(img, c), img

    def _aux_loss(self, img, c, real):
        hook = getattr(_unwrap(self.D), 'aux_loss', None)
        if hook is None:
            return None
        return hook(img, c, real=real)

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, sync=True):
        if phase not in PHASES:
            raise ValueError(f'unknown training phase {phase!r}; expected one of {", ".join(PHASES)}')
        do_Gmain = phase in ('Gmain', 'Gboth')
        do_Dmain = phase in ('Dmain', 'Dboth')
        do_Gpl = phase in ('Greg', 'Gboth') and self.pl_weight != 0
        do_Dr1 = phase in ('Dreg', 'Dboth') and self.r1_gamma != 0

        if do_Gmain:
            gen_img, _ = self.run_G(gen_z, gen_c)
            gen_logits, _ = self.run_D(gen_img, gen_c)
            training_stats.report('Loss/scores/fake', gen_logits)
            training_stats.report('Loss/signs/fake', gen_logits.sign())
            loss_Gmain = F.softplus(-gen_logits)                    # -log(sigmoid(D(G(z))))
            training_stats.report('Loss/G/loss', loss_Gmain)
            loss_Gmain.mean().mul(gain).backward()

        if do_Gpl:
            n = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
            gen_img, gen_ws = self.run_G(gen_z[:n], gen_c[:n])
            pl_noise = torch.randn_like(gen_img) / math.sqrt(gen_img.shape[2] * gen_img.shape[3])
            (pl_grads,) = torch.autograd.grad(outputs=[(gen_img * pl_noise).sum()], inputs=[gen_ws], create_graph=True)
            pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()
            pl_mean = self.pl_mean.lerp(pl_lengths.mean(), self.pl_decay)
            self.pl_mean.copy_(pl_mean.detach())
            pl_penalty = (pl_lengths - pl_mean).square()
            training_stats.report('Loss/pl_penalty', pl_penalty)
            loss_Gpl = pl_penalty * self.pl_weight
            training_stats.report('Loss/G/reg', loss_Gpl)
            # The `* 0` term keeps every synthesis output in the graph (and thus every parameter).
            (gen_img[:, 0, 0, 0] * 0 + loss_Gpl).mean().mul(gain).backward()

        loss_Dgen = 0
        if do_Dmain:
            gen_img, _ = self.run_G(gen_z, gen_c)
            gen_logits, seen = self.run_D(gen_img.detach(), gen_c)
            training_stats.report('Loss/scores/fake', gen_logits)
            training_stats.report('Loss/signs/fake', gen_logits.sign())
            loss_Dgen = F.softplus(gen_logits)                      # -log(1 - sigmoid(D(G(z))))
            total = loss_Dgen.mean()
            aux = self._aux_loss(seen.detach(), gen_c, real=False)
            if aux is not None:
                training_stats.report('Loss/D/aux_fake', aux)
                total = total + aux.mean()
            total.mul(gain).backward()

        if do_Dmain or do_Dr1:
            real_img_tmp = real_img.detach().requires_grad_(do_Dr1)
            real_logits, seen = self.run_D(real_img_tmp, real_c)
            training_stats.report('Loss/scores/real', real_logits)
            training_stats.report('Loss/signs/real', real_logits.sign())

            loss = real_logits.sum() * 0   # keeps every D output in the graph
            if do_Dmain:
                loss_Dreal = F.softplus(-real_logits)               # -log(sigmoid(D(x)))
                training_stats.report('Loss/D/loss', loss_Dgen + loss_Dreal)
                loss = loss + loss_Dreal.mean()
                aux = self._aux_loss(seen.detach(), real_c, real=True)
                if aux is not None:
                    training_stats.report('Loss/D/aux_real', aux)
                    loss = loss + aux.mean()
            if do_Dr1:
                # Gradient w.r.t. the images before augmentation: R1 then needs double backward
                # through the augment pipe's resampling (stylefreq.ops.grid_sample supports it).
                (r1_grads,) = torch.autograd.grad(outputs=[real_logits.sum()], inputs=[real_img_tmp], create_graph=True)
                r1_penalty = r1_grads.square().sum([1, 2, 3])
                loss_Dr1 = r1_penalty * (self.r1_gamma / 2)
                training_stats.report('Loss/r1_penalty', r1_penalty)
                training_stats.report('Loss/D/reg', loss_Dr1)
                loss = loss + loss_Dr1.mean()
            loss.mul(gain).backward()
