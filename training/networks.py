"""StyleGAN2-ADA generator and discriminator: stylefreq's implementation, upstream's format.

Written from a specification of the mathematics, not from upstream's code. Class names, constructor arguments, tensor names, shapes
and the order in which tensors are created are those of NVlabs/stylegan2-ada-pytorch, so its
checkpoints load by name and produce the same images; everything else here is stylefreq's own.

    G = Generator(z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs, synthesis_kwargs)
    img = G(z, c, truncation_psi=1, truncation_cutoff=None, noise_mode='random')
    logits = Discriminator(c_dim, img_resolution, img_channels, ...)(img, c)        # [N, 1]

Precision. Blocks flagged `use_fp16` (the `num_fp16_res` highest resolutions) compute in float16
on a GPU. On the CPU they compute in float32, so a network trained with fp16 blocks runs on any
machine without flags; `fp16_on_cpu=True` (a forward keyword, passed to the blocks) forces the
float16 computation on the CPU as well, which is what upstream does there. `force_fp32=True`
makes every block float32. Mapping, styles, demodulation coefficients, noise and the running
image are float32 in every mode.

Equalised learning rate: weights are stored N(0, 1) (FC weights divided by their lr multiplier)
and scaled by 1/sqrt(fan_in) (times the lr multiplier) every time they are used; the scale is
applied to the weight, not the output, which fixes how float32 results round.

Initialisation draws `torch.randn` in module creation order; that order (children, and tensors
within a module) is kept so that a seed gives upstream's initial weights.

This module imports only torch, numpy and stylefreq, because `stylefreq.export` embeds its source
in pickles that a stock upstream checkout loads.
"""

import functools

import numpy as np
import torch

from stylefreq.ops import bias_act, conv2d_resample, fma, upfirdn2d
from stylefreq.persistence import persistent_class

ARCHITECTURES = ('orig', 'skip', 'resnet')
NOISE_MODES = ('random', 'const', 'none')
FIR_TAPS = [1, 3, 3, 1]   # default resampling filter (binomial), 4x4 after setup_filter

# bias_act's default output gain: sqrt(2) keeps the activations' second moment for the ReLU family.
_SQRT2_GAIN_ACTIVATIONS = ('relu', 'lrelu', 'swish')
SQRT_HALF = np.sqrt(0.5)  # resnet branches are each scaled by sqrt(1/2) so their sum keeps unit scale

# ------------------------------------------------------------------------------------------------
# Small helpers.


def _randn(*shape, divisor=1, channels_last=False):
    """Standard-normal init tensor (one randn draw), optionally divided and in NHWC layout."""
    t = torch.randn(shape)
    if divisor != 1:        # (x / 1 is x; skipping it keeps construction on the meta device cheap)
        t = t / divisor
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


def _filled(size, value):
    return torch.full([size], float(value))


@functools.lru_cache(maxsize=16)
def _fir(shape, values):
    return upfirdn2d.setup_filter(np.asarray(values, dtype=np.float64).reshape(shape))


def _register_fir(module, taps):
    """Every resampling module keeps its FIR filter as the buffer `resample_filter` (format fact).
    The filter is made once per tap list and copied: a network has one per layer."""
    taps = np.asarray(taps, dtype=np.float64)
    module.register_buffer('resample_filter', _fir(taps.shape, tuple(taps.ravel().tolist())).clone())


def _default_act_gain(activation):
    return np.sqrt(2) if activation in _SQRT2_GAIN_ACTIVATIONS else 1


def _scaled_clamp(conv_clamp, gain):
    return None if conv_clamp is None else conv_clamp * gain


def _rms_normalize(v, eps=1e-8):
    """v / sqrt(mean over features of v^2 + eps): square, mean, +eps, rsqrt, multiply (rounding order)."""
    return v * (v.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def _width_rule(channel_base, channel_max):
    """The per-resolution width rule shared by G and D."""
    return lambda res: min(channel_base // res, channel_max)


def _lowest_fp16_resolution(resolution_log2, num_fp16_res):
    """The num_fp16_res highest resolutions run in float16, never the 4x4 one."""
    return max(2 ** (resolution_log2 + 1 - num_fp16_res), 8)


def _check_resolution(img_resolution, who):
    res = int(img_resolution)
    if res < 4 or res & (res - 1) != 0 or res != img_resolution:
        raise ValueError(f'{who}: img_resolution must be a power of two of at least 4, got {img_resolution!r}')
    return res


def _check_architecture(architecture, who):
    if architecture not in ARCHITECTURES:
        raise ValueError(f'{who}: architecture must be one of {", ".join(ARCHITECTURES)}, got {architecture!r}')


def _compute_dtype(use_fp16, device, force_fp32, fp16_on_cpu):
    """float16 for a use_fp16 block unless forced to float32, or on a CPU without fp16_on_cpu."""
    wants_half = use_fp16 and not force_fp32
    if wants_half and (device.type != 'cpu' or fp16_on_cpu):
        return torch.float16
    return torch.float32


def _memory_format(channels_last, dtype):
    nhwc = channels_last and dtype == torch.float16
    return torch.channels_last if nhwc else torch.contiguous_format


def _fused_by_default(training, dtype, batch):
    """Training wants the batched (unfused) form; per-sample float16 weights are fragile unless N = 1."""
    return not training and (dtype == torch.float32 or batch == 1)


def _children(module, resolutions):
    return [getattr(module, f'b{res}') for res in resolutions]

# ------------------------------------------------------------------------------------------------
# Modulated convolution.


def modulated_conv2d(x, weight, styles, noise=None, up=1, padding=0, resample_filter=None, demodulate=True,
                     flip_weight=True, fused_modconv=True):
    """Convolve each sample with the weight scaled per input channel by its style vector.

    x [N, I, H, W]; weight [O, I, kh, kw] (raw, no equalised-LR gain); styles [N, I] float32;
    noise broadcastable to the output (added after demodulation) or None. With `demodulate` each
    output channel of each sample's weight is rescaled to unit L2 norm. The fused form runs one
    grouped convolution with per-sample weights; the other modulates the activations instead and
    shares one weight across the batch. Both compute the same function.
    """
    batch, in_channels = x.shape[0], x.shape[1]
    if demodulate and x.dtype == torch.float16:
        weight, styles = _unit_scaled(weight, styles)
    conv_args = dict(f=resample_filter, up=up, padding=padding, flip_weight=flip_weight)

    if not fused_modconv:
        # One weight for the whole batch: modulate the activations, demodulate the output.
        out = x * styles.reshape(batch, in_channels, 1, 1).to(x.dtype)
        out = conv2d_resample.conv2d_resample(x=out, w=weight.to(x.dtype), **conv_args)
        noise = None if noise is None else noise.to(out.dtype)
        if not demodulate:
            return out if noise is None else out + noise
        demod = _factored_inv_norm(weight, styles).reshape(batch, -1, 1, 1).to(out.dtype)
        return out * demod if noise is None else fma.fma(out, demod, noise)

    # One grouped convolution with per-sample weights W[o, i] s[n, i] d[n, o]: the batch becomes the
    # group axis. Style and demodulation are folded into one [N, O, I] factor first, so the large
    # [N, O, I, kh, kw] tensor is formed by a single multiplication.
    factor = styles.reshape(batch, 1, in_channels)
    if demodulate:
        factor = factor * _factored_inv_norm(weight, styles).reshape(batch, -1, 1)
    kernels = weight.unsqueeze(0) * factor.unsqueeze(3).unsqueeze(4)                    # [N, O, I, kh, kw]
    kernels = kernels.reshape(-1, in_channels, weight.shape[2], weight.shape[3]).to(x.dtype)
    grouped = conv2d_resample.conv2d_resample(x=x.reshape(1, batch * in_channels, x.shape[2], x.shape[3]),
                                              w=kernels, groups=batch, **conv_args)
    out = grouped.reshape(batch, -1, grouped.shape[2], grouped.shape[3])
    # In place: the float32 noise is added in float32 and rounded once into the activation dtype,
    # so a float16 block stays float16 (an out-of-place add would promote it to float32).
    return out if noise is None else out.add_(noise)


def _factored_inv_norm(weight, styles):
    """Demodulation coefficients [N, O] without the per-sample weights.

    1 / sqrt(sum_{i,a,b} (W[o, i, a, b] s[n, i])^2 + 1e-8) = 1 / sqrt(sum_i s[n, i]^2 q[o, i] + 1e-8)
    with q = sum_{a,b} W^2: one small matrix product instead of squaring and summing an
    [N, O, I, kh, kw] tensor (and differentiating that) per layer, which made up about a third of
    a CPU training step and of an inference forward. The sum is ordered differently from the
    materialised one, so results differ from upstream's in the last bits (about 1e-7 relative).
    """
    return (styles.square().matmul(weight.square().sum(dim=[2, 3]).t()) + 1e-8).rsqrt()


def _unit_scaled(weight, styles):
    """Weight and styles brought to unit scale before a float16 modulated convolution.

    Keeps the float16 per-sample weights from overflowing or underflowing; demodulation cancels
    both factors (apart from the relative size of its 1e-8 epsilon).
    """
    per_out_max = weight.abs().amax(dim=[1, 2, 3], keepdim=True)
    weight = weight * ((1 / np.sqrt(weight[0].numel())) / per_out_max)
    return weight, styles / styles.abs().amax(dim=1, keepdim=True)

# ------------------------------------------------------------------------------------------------
# Layers.


@persistent_class
class FullyConnectedLayer(torch.nn.Module):
    """Dense layer with equalised learning rate: y = act(x (W g)^T + b lr), g = lr / sqrt(in)."""

    def __init__(self, in_features, out_features, bias=True, activation='linear', lr_multiplier=1, bias_init=0):
        super().__init__()
        self.activation = activation
        self.weight = torch.nn.Parameter(_randn(out_features, in_features, divisor=lr_multiplier))
        self.bias = torch.nn.Parameter(_filled(out_features, bias_init)) if bias else None
        self.weight_gain = np.float64(lr_multiplier) / np.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        scaled_weight = self.weight.to(x.dtype) * self.weight_gain
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if bias is not None and self.bias_gain != 1:
            bias = bias * self.bias_gain
        if bias is not None and self.activation == 'linear':
            return torch.addmm(bias.unsqueeze(0), x, scaled_weight.t())   # one GEMM, bias as accumulator
        return bias_act.bias_act(x.matmul(scaled_weight.t()), bias, act=self.activation)

    def extra_repr(self):
        return f'in_features={self.weight.shape[1]}, out_features={self.weight.shape[0]}, activation={self.activation}'


@persistent_class
class Conv2dLayer(torch.nn.Module):
    """Convolution with equalised learning rate, optional FIR up/downsampling, bias, activation, clamp."""

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation='linear', up=1, down=1,
                 resample_filter=FIR_TAPS, conv_clamp=None, channels_last=False, trainable=True):
        super().__init__()
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        _register_fir(self, resample_filter)
        self.padding = kernel_size // 2
        self.weight_gain = 1 / np.sqrt(in_channels * kernel_size * kernel_size)
        self.act_gain = _default_act_gain(activation)

        initial = dict(weight=_randn(out_channels, in_channels, kernel_size, kernel_size, channels_last=channels_last),
                       bias=torch.zeros([out_channels]) if bias else None)
        for name, value in initial.items():
            if value is None:
                setattr(self, name, None)
            elif trainable:
                setattr(self, name, torch.nn.Parameter(value))
            else:
                # Frozen (Freeze-D): same names, but buffers, so optimisers never see them.
                self.register_buffer(name, value)

    def forward(self, x, gain=1):
        scaled_weight = (self.weight * self.weight_gain).to(x.dtype)
        y = conv2d_resample.conv2d_resample(x=x, w=scaled_weight, f=self.resample_filter, up=self.up,
                                            down=self.down, padding=self.padding, flip_weight=(self.up == 1))
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return bias_act.bias_act(y, bias, act=self.activation, gain=self.act_gain * gain,
                                 clamp=_scaled_clamp(self.conv_clamp, gain))

    def extra_repr(self):
        o, i, k = self.weight.shape[:3]
        return f'in_channels={i}, out_channels={o}, kernel_size={k}, activation={self.activation}, up={self.up}, down={self.down}'

# ------------------------------------------------------------------------------------------------
# Generator.


@persistent_class
class MappingNetwork(torch.nn.Module):
    """z (and label c) -> w, broadcast to [N, num_ws, w_dim]; tracks the average w for truncation.

    Also the label embedding of a conditional discriminator (z_dim 0, num_ws None, no w_avg).
    """

    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, embed_features=None, layer_features=None,
                 activation='lrelu', lr_multiplier=0.01, w_avg_beta=0.995):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta

        embed_width = 0 if c_dim == 0 else (w_dim if embed_features is None else embed_features)
        hidden_width = w_dim if layer_features is None else layer_features
        widths = [z_dim + embed_width] + [hidden_width] * (num_layers - 1) + [w_dim]
        if c_dim:
            self.embed = FullyConnectedLayer(in_features=c_dim, out_features=embed_width)
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            self.add_module(f'fc{i}', FullyConnectedLayer(fan_in, fan_out, activation=activation,
                                                          lr_multiplier=lr_multiplier))
        tracks_average = num_ws is not None and w_avg_beta is not None
        if tracks_average:
            self.register_buffer('w_avg', _filled(w_dim, 0))

    def _check_inputs(self, z, c):
        if self.z_dim > 0 and (z is None or z.ndim != 2 or z.shape[1] != self.z_dim):
            got = None if z is None else list(z.shape)
            raise ValueError(f'mapping: latent z must have shape [N, {self.z_dim}], got {got}')
        if self.c_dim == 0:
            return
        if c is None:
            raise ValueError(f'mapping: this network is conditional and needs a label c of shape [N, {self.c_dim}]')
        batch = z.shape[0] if self.z_dim > 0 else c.shape[0]
        if c.ndim != 2 or tuple(c.shape) != (batch, self.c_dim):
            raise ValueError(f'mapping: label c must have shape [{batch}, {self.c_dim}], got {list(c.shape)}')

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False):
        self._check_inputs(z, c)
        # z and the embedded label are normalised separately, then joined (z first).
        inputs = [_rms_normalize(z.to(torch.float32))] if self.z_dim else []
        if self.c_dim:
            inputs.append(_rms_normalize(self.embed(c.to(torch.float32))))
        w = torch.cat(inputs, dim=1) if len(inputs) > 1 else inputs[0]
        for i in range(self.num_layers):
            w = getattr(self, f'fc{i}')(w)

        has_w_avg = hasattr(self, 'w_avg')
        if has_w_avg and self.training and not skip_w_avg_update:
            # w_avg <- batch mean + beta (w_avg - batch mean), the EMA of the mapped w.
            self.w_avg.copy_(torch.lerp(w.detach().mean(dim=0), self.w_avg, self.w_avg_beta))

        ws = w if self.num_ws is None else w.unsqueeze(1).expand(-1, self.num_ws, -1).contiguous()
        if truncation_psi == 1:
            return ws
        if not has_w_avg:
            raise ValueError('mapping: truncation needs the tracked w_avg, which this network does not keep')
        cut = ws.shape[1] if truncation_cutoff is None else truncation_cutoff
        pulled = torch.lerp(self.w_avg, ws[:, :cut], truncation_psi)
        return pulled if cut >= ws.shape[1] else torch.cat([pulled, ws[:, cut:]], dim=1)

    def extra_repr(self):
        return f'z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}'


@persistent_class
class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3 convolution (optionally upsampling 2x) + noise + bias + activation + clamp."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, kernel_size=3, up=1, use_noise=True,
                 activation='lrelu', resample_filter=FIR_TAPS, conv_clamp=None, channels_last=False):
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        _register_fir(self, resample_filter)
        self.padding = kernel_size // 2
        self.act_gain = _default_act_gain(activation)

        # Creation order = order of the randn draws (affine, weight, noise_const): same-seed parity.
        self.affine = FullyConnectedLayer(in_features=w_dim, out_features=in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(_randn(out_channels, in_channels, kernel_size, kernel_size,
                                                channels_last=channels_last))
        if self.use_noise:
            self.register_buffer('noise_const', _randn(resolution, resolution))
            self.noise_strength = torch.nn.Parameter(torch.tensor(0.0))
        self.bias = torch.nn.Parameter(_filled(out_channels, 0))

    def _noise(self, noise_mode, batch, device):
        if noise_mode not in NOISE_MODES:
            raise ValueError(f'noise_mode must be one of {", ".join(NOISE_MODES)}, got {noise_mode!r}')
        if not self.use_noise or noise_mode == 'none':
            return None
        if noise_mode == 'const':
            return self.noise_const * self.noise_strength
        fresh = torch.randn([batch, 1, self.resolution, self.resolution], device=device)
        return fresh * self.noise_strength

    def forward(self, x, w, noise_mode='random', fused_modconv=True, gain=1):
        noise = self._noise(noise_mode, x.shape[0], x.device)
        y = modulated_conv2d(x, self.weight, self.affine(w), noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, flip_weight=(self.up == 1),
                             fused_modconv=fused_modconv)
        return bias_act.bias_act(y, self.bias.to(y.dtype), act=self.activation, gain=self.act_gain * gain,
                                 clamp=_scaled_clamp(self.conv_clamp, gain))

    def extra_repr(self):
        o, i = self.weight.shape[:2]
        return f'in_channels={i}, out_channels={o}, resolution={self.resolution}, up={self.up}, activation={self.activation}'


@persistent_class
class ToRGBLayer(torch.nn.Module):
    """Modulated (not demodulated) 1x1 convolution to image channels, plus bias and clamp."""

    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None, channels_last=False):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(in_features=w_dim, out_features=in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(_randn(out_channels, in_channels, kernel_size, kernel_size,
                                                channels_last=channels_last))
        self.bias = torch.nn.Parameter(_filled(out_channels, 0))
        self.weight_gain = 1 / np.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x, w, fused_modconv=True):
        # Without demodulation the equalised-LR gain must be applied somewhere: on the styles.
        y = modulated_conv2d(x, self.weight, self.affine(w) * self.weight_gain, demodulate=False,
                             fused_modconv=fused_modconv)
        return bias_act.bias_act(y, self.bias.to(y.dtype), clamp=self.conv_clamp)


@persistent_class
class SynthesisBlock(torch.nn.Module):
    """One resolution of the synthesis network: [2x up-conv], conv, [ToRGB], [resnet skip].

    forward(x, img, ws) consumes ws[:, 0 .. num_conv + num_torgb - 1] in the order conv0, conv1,
    torgb and returns (features in the block's dtype, running image in float32 or None).
    """

    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, is_last, architecture='skip',
                 resample_filter=FIR_TAPS, conv_clamp=None, use_fp16=False, fp16_channels_last=False,
                 **layer_kwargs):
        super().__init__()
        _check_architecture(architecture, 'SynthesisBlock')
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = bool(use_fp16 and fp16_channels_last)
        _register_fir(self, resample_filter)

        starts_from_const = in_channels == 0
        self.num_conv = 1 if starts_from_const else 2
        self.num_torgb = 1 if (is_last or architecture == 'skip') else 0
        shared = dict(w_dim=w_dim, resolution=resolution, conv_clamp=conv_clamp, channels_last=self.channels_last)
        if starts_from_const:
            self.const = torch.nn.Parameter(_randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, up=2, resample_filter=resample_filter,
                                        **shared, **layer_kwargs)
        self.conv1 = SynthesisLayer(out_channels, out_channels, **shared, **layer_kwargs)
        if self.num_torgb:
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp,
                                    channels_last=self.channels_last)
        if not starts_from_const and architecture == 'resnet':
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter, channels_last=self.channels_last)

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, fp16_on_cpu=False, **layer_kwargs):
        dtype = _compute_dtype(self.use_fp16, ws.device, force_fp32, fp16_on_cpu)
        fused = _fused_by_default(self.training, dtype, ws.shape[0]) if fused_modconv is None else fused_modconv
        per_layer_w = ws.unbind(dim=1)
        features = self._features(x, per_layer_w, dtype, dict(layer_kwargs, fused_modconv=fused))
        return features, self._image(img, features, per_layer_w, fused)

    def _features(self, x, per_layer_w, dtype, conv_kwargs):
        fmt = _memory_format(self.channels_last, dtype)
        if self.num_conv == 1:     # the 4x4 block starts from its learned constant
            start = self.const.to(dtype).unsqueeze(0).expand(per_layer_w[0].shape[0], -1, -1, -1)
            return self.conv1(start.contiguous(memory_format=fmt), per_layer_w[0], **conv_kwargs)
        x = x.to(dtype=dtype, memory_format=fmt)
        hidden = self.conv0(x, per_layer_w[0], **conv_kwargs)
        if self.architecture != 'resnet':
            return self.conv1(hidden, per_layer_w[1], **conv_kwargs)
        return self.skip(x, gain=SQRT_HALF) + self.conv1(hidden, per_layer_w[1], gain=SQRT_HALF, **conv_kwargs)

    def _image(self, img, features, per_layer_w, fused):
        """The running float32 image: 2x upsampled from the previous block, plus this block's RGB."""
        carried = None if img is None else upfirdn2d.upsample2d(img, self.resample_filter)
        if not self.num_torgb:
            return carried
        rgb = self.torgb(features, per_layer_w[self.num_conv], fused_modconv=fused)
        rgb = rgb.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        return rgb if carried is None else carried + rgb

    def extra_repr(self):
        return f'resolution={self.resolution}, architecture={self.architecture}, use_fp16={self.use_fp16}'


@persistent_class
class SynthesisNetwork(torch.nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, img_channels, R, R] through blocks b4, b8, ..., bR."""

    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512, num_fp16_res=0,
                 **block_kwargs):
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = _check_resolution(img_resolution, 'SynthesisNetwork')
        self.img_resolution_log2 = self.img_resolution.bit_length() - 1
        self.img_channels = img_channels
        self.block_resolutions = [4 << k for k in range(self.img_resolution_log2 - 1)]
        width = _width_rule(channel_base, channel_max)
        fp16_from = _lowest_fp16_resolution(self.img_resolution_log2, num_fp16_res)
        blocks = [SynthesisBlock(width(res // 2) if res > 4 else 0, width(res), w_dim=w_dim, resolution=res,
                                 img_channels=img_channels, is_last=(res == self.img_resolution),
                                 use_fp16=(res >= fp16_from), **block_kwargs)
                  for res in self.block_resolutions]
        for res, block in zip(self.block_resolutions, blocks):
            self.add_module(f'b{res}', block)
        # A block's window of ws overlaps the next one by its torgb entry (shared with the next conv0).
        self.num_ws = sum(block.num_conv for block in blocks) + blocks[-1].num_torgb

    def forward(self, ws, **block_kwargs):
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f'synthesis: ws must have shape [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}')
        ws32 = ws.to(torch.float32)
        features = image = None
        first = 0
        for block in _children(self, self.block_resolutions):
            window = ws32.narrow(1, first, block.num_conv + block.num_torgb)
            features, image = block(features, image, window, **block_kwargs)
            first += block.num_conv
        return image

    def extra_repr(self):
        return f'w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, img_channels={self.img_channels}'


@persistent_class
class Generator(torch.nn.Module):
    """z, c -> image: `synthesis(mapping(z, c))`. Built synthesis first (upstream's tensor order)."""

    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs={}, synthesis_kwargs={}):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        image_shape = dict(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels)
        self.synthesis = SynthesisNetwork(**image_shape, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.synthesis.num_ws,
                                      **mapping_kwargs)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, **synthesis_kwargs):
        mapped = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(mapped, **synthesis_kwargs)

# ------------------------------------------------------------------------------------------------
# Discriminator.


@persistent_class
class DiscriminatorBlock(torch.nn.Module):
    """One resolution of the discriminator: [fromrgb], conv, 2x down-conv, [resnet skip]."""

    def __init__(self, in_channels, tmp_channels, out_channels, resolution, img_channels, first_layer_idx,
                 architecture='resnet', activation='lrelu', resample_filter=FIR_TAPS, conv_clamp=None,
                 use_fp16=False, fp16_channels_last=False, freeze_layers=0):
        super().__init__()
        _check_architecture(architecture, 'DiscriminatorBlock')
        if in_channels not in (0, tmp_channels):
            raise ValueError(f'DiscriminatorBlock: in_channels must be 0 or tmp_channels ({tmp_channels}), '
                             f'got {in_channels}')
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = bool(use_fp16 and fp16_channels_last)
        _register_fir(self, resample_filter)

        # (name, exists, constructor arguments), in creation order. Layers are numbered across the
        # whole D from the input side; the first freeze_layers of them keep their tensors as buffers.
        act = dict(activation=activation, conv_clamp=conv_clamp)
        down = dict(down=2, resample_filter=resample_filter)
        candidates = [
            ('fromrgb', in_channels == 0 or architecture == 'skip',
             dict(in_channels=img_channels, out_channels=tmp_channels, kernel_size=1, **act)),
            ('conv0', True, dict(in_channels=tmp_channels, out_channels=tmp_channels, kernel_size=3, **act)),
            ('conv1', True, dict(in_channels=tmp_channels, out_channels=out_channels, kernel_size=3, **down, **act)),
            ('skip', architecture == 'resnet',
             dict(in_channels=tmp_channels, out_channels=out_channels, kernel_size=1, bias=False, **down)),
        ]
        layers = [(name, kwargs) for name, exists, kwargs in candidates if exists]
        for index, (name, kwargs) in enumerate(layers):
            frozen = first_layer_idx + index < freeze_layers
            self.add_module(name, Conv2dLayer(trainable=not frozen, channels_last=self.channels_last, **kwargs))
        self.num_layers = len(layers)

    def forward(self, x, img, force_fp32=False, fp16_on_cpu=False):
        device = img.device if x is None else x.device
        dtype = _compute_dtype(self.use_fp16, device, force_fp32, fp16_on_cpu)
        fmt = _memory_format(self.channels_last, dtype)
        x = None if x is None else x.to(dtype=dtype, memory_format=fmt)

        if hasattr(self, 'fromrgb'):
            img = img.to(dtype=dtype, memory_format=fmt)
            from_img = self.fromrgb(img)
            x = from_img if x is None else x + from_img
            # Only the 'skip' architecture feeds the image to the next block too.
            img = None if self.architecture != 'skip' else upfirdn2d.downsample2d(img, self.resample_filter)

        main = self.conv0(x)
        if self.architecture != 'resnet':
            return self.conv1(main), img
        return self.skip(x, gain=SQRT_HALF) + self.conv1(main, gain=SQRT_HALF), img

    def extra_repr(self):
        return f'resolution={self.resolution}, architecture={self.architecture}, use_fp16={self.use_fp16}'


@persistent_class
class MinibatchStdLayer(torch.nn.Module):
    """Appends, per group of samples, the mean standard deviation of the features as extra channels.

    Groups are strided: with n = N / G groups, sample m belongs to group m mod n. The channels are
    split into num_channels contiguous slices, each giving one extra channel.
    """

    def __init__(self, group_size, num_channels=1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x):
        batch, channels, height, width = x.shape
        group = batch if self.group_size is None else min(self.group_size, batch)
        slices = self.num_channels
        if batch % group != 0:
            raise ValueError(f'minibatch-std: the batch ({batch}) must be divisible by the group size ({group})')
        if channels % slices != 0:
            raise ValueError(f'minibatch-std: {channels} channels cannot be split into {slices} slices')
        members = x.reshape(group, batch // group, slices, channels // slices, height, width)
        deviation = members - members.mean(dim=0)
        std = (deviation.square().mean(dim=0) + 1e-8).sqrt()         # [n, F, c, H, W]
        per_group = std.mean(dim=[2, 3, 4]).reshape(-1, slices, 1, 1)  # [n, F, 1, 1]
        return torch.cat([x, per_group.repeat(group, 1, height, width)], dim=1)

    def extra_repr(self):
        return f'group_size={self.group_size}, num_channels={self.num_channels}'


@persistent_class
class DiscriminatorEpilogue(torch.nn.Module):
    """The 4x4 head: [fromrgb], minibatch-std, conv, fc, out, [projection onto the label embedding]."""

    def __init__(self, in_channels, cmap_dim, resolution, img_channels, architecture='resnet', mbstd_group_size=4,
                 mbstd_num_channels=1, activation='lrelu', conv_clamp=None):
        super().__init__()
        _check_architecture(architecture, 'DiscriminatorEpilogue')
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture

        reads_image = architecture == 'skip'     # the image reaches every resolution, this one too
        if reads_image:
            self.fromrgb = Conv2dLayer(img_channels, in_channels, 1, activation=activation)
        with_stats = mbstd_num_channels > 0
        self.mbstd = MinibatchStdLayer(mbstd_group_size, num_channels=mbstd_num_channels) if with_stats else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation=activation,
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution * resolution, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, cmap_dim if cmap_dim > 0 else 1)

    def forward(self, x, img, cmap, force_fp32=False):
        # Always float32, whatever the blocks used (force_fp32 is accepted for symmetry only).
        h = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if hasattr(self, 'fromrgb'):
            h = h + self.fromrgb(img.to(torch.float32))
        h = h if self.mbstd is None else self.mbstd(h)
        scores = self.out(self.fc(self.conv(h).flatten(1)))     # flatten: (channel, row, column) order
        if self.cmap_dim == 0:
            return scores
        # Projection discriminator: the logit is the score vector's inner product with the label map.
        return (scores * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))

    def extra_repr(self):
        return f'resolution={self.resolution}, architecture={self.architecture}, cmap_dim={self.cmap_dim}'


@persistent_class
class Discriminator(torch.nn.Module):
    """img [N, img_channels, R, R], c [N, c_dim] -> logits [N, 1], through blocks bR, ..., b8 and b4."""

    def __init__(self, c_dim, img_resolution, img_channels, architecture='resnet', channel_base=32768,
                 channel_max=512, num_fp16_res=0, conv_clamp=None, cmap_dim=None, block_kwargs={},
                 mapping_kwargs={}, epilogue_kwargs={}):
        super().__init__()
        self.c_dim = c_dim
        self.img_resolution = _check_resolution(img_resolution, 'Discriminator')
        self.img_resolution_log2 = self.img_resolution.bit_length() - 1
        self.img_channels = img_channels
        self.block_resolutions = [self.img_resolution >> k for k in range(self.img_resolution_log2 - 2)]
        width = _width_rule(channel_base, channel_max)
        fp16_from = _lowest_fp16_resolution(self.img_resolution_log2, num_fp16_res)
        label_dim = 0 if c_dim == 0 else (width(4) if cmap_dim is None else cmap_dim)
        shared = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)

        layers_before = 0
        for k, res in enumerate(self.block_resolutions):
            block = DiscriminatorBlock(0 if k == 0 else width(res), width(res), width(res // 2),
                                       resolution=res, first_layer_idx=layers_before, use_fp16=(res >= fp16_from),
                                       **block_kwargs, **shared)
            self.add_module(f'b{res}', block)
            layers_before += block.num_layers
        if c_dim:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=label_dim, num_ws=None, w_avg_beta=None,
                                          **mapping_kwargs)
        self.b4 = DiscriminatorEpilogue(width(4), cmap_dim=label_dim, resolution=4, **epilogue_kwargs, **shared)

    def forward(self, img, c, **block_kwargs):
        R = self.img_resolution
        if img.ndim != 4 or tuple(img.shape[1:]) != (self.img_channels, R, R):
            raise ValueError(f'discriminator: images must have shape [N, {self.img_channels}, {R}, {R}], '
                             f'got {list(img.shape)}')
        if self.c_dim > 0 and (c is None or c.ndim != 2 or tuple(c.shape) != (img.shape[0], self.c_dim)):
            got = None if c is None else list(c.shape)
            raise ValueError(f'discriminator: labels must have shape [{img.shape[0]}, {self.c_dim}], got {got}')
        features = None
        for block in _children(self, self.block_resolutions):
            features, img = block(features, img, **block_kwargs)
        label_map = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b4(features, img, label_map)

    def extra_repr(self):
        return f'c_dim={self.c_dim}, img_resolution={self.img_resolution}, img_channels={self.img_channels}'
