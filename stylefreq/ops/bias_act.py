"""Bias + activation + gain + clamp, the epilogue of every StyleGAN2 layer.

``bias_act(x, b, act='lrelu')`` computes ``clamp(act(x + b) * gain)`` with the same
argument names, defaults and activation table as StyleGAN2-ADA, written with plain
torch ops so that autograd supplies gradients of any order (R1 and path-length
regularisation need the second one).

Rounding. Each step (add bias, activation, multiply by the gain unless it is exactly 1,
clamp) is a separate elementwise op in ``x``'s dtype, which is how StyleGAN2-ADA's
reference path rounds; on the CPU the results are bit-identical to it. On CUDA, upstream
instead runs a fused kernel, and results there can differ from this module:

* the kernel evaluates the whole chain in float32 and rounds once, also for float16
  input, whereas here a float16 ``x`` is rounded to float16 after every step (a few fp16
  ulps; float32 input differs only where the kernel's fast-math functions do);
* the kernel saturates for ``|x| > 80`` (tanh -> +-1, sigmoid and swish -> 0 below -80,
  softplus -> x above 80); torch's functions stay accurate there, and the two differ by
  less than 1e-30 in absolute value;
* under ``clamp`` the kernel maps NaN to ``-clamp``; ``torch.clamp`` keeps NaN;
* the kernel passes the clamp gradient only strictly inside ``(-clamp, clamp)``, torch also
  at equality (a measure-zero difference).
"""

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Activation:
    """One entry of the activation table.

    ``def_gain`` is the factor that keeps the activation variance-preserving for
    unit-variance inputs (√2 for the rectifiers and swish); layers read it to scale
    their outputs. ``def_alpha`` is only meaningful for ``lrelu`` (the negative
    slope); every other activation ignores ``alpha``.
    """
    func: Callable[[torch.Tensor, float], torch.Tensor]
    def_alpha: float
    def_gain: float


def _swish(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return x * torch.sigmoid(x)


activation_funcs: Dict[str, Activation] = {
    'linear':   Activation(lambda x, alpha: x,                      def_alpha=0.0, def_gain=1.0),
    'relu':     Activation(lambda x, alpha: F.relu(x),              def_alpha=0.0, def_gain=math.sqrt(2)),
    'lrelu':    Activation(lambda x, alpha: F.leaky_relu(x, alpha), def_alpha=0.2, def_gain=math.sqrt(2)),
    'tanh':     Activation(lambda x, alpha: torch.tanh(x),          def_alpha=0.0, def_gain=1.0),
    'sigmoid':  Activation(lambda x, alpha: torch.sigmoid(x),       def_alpha=0.0, def_gain=1.0),
    'elu':      Activation(lambda x, alpha: F.elu(x),               def_alpha=0.0, def_gain=1.0),
    'selu':     Activation(lambda x, alpha: F.selu(x),              def_alpha=0.0, def_gain=1.0),
    'softplus': Activation(lambda x, alpha: F.softplus(x),          def_alpha=0.0, def_gain=1.0),
    'swish':    Activation(_swish,                                  def_alpha=0.0, def_gain=math.sqrt(2)),
}


def bias_act(
    x: torch.Tensor,
    b: Optional[torch.Tensor] = None,
    dim: int = 1,
    act: str = 'linear',
    alpha: Optional[float] = None,
    gain: Optional[float] = None,
    clamp: Optional[float] = None,
    impl: str = 'cuda',
) -> torch.Tensor:
    """Add a bias, apply an activation, scale, and clamp.

    Args:
        x:     Input tensor of any shape.
        b:     Optional 1-D bias with ``x.shape[dim]`` elements, broadcast along ``dim``.
               Cast to ``x.dtype`` so a float32 bias does not promote a float16 ``x``.
        dim:   Dimension of ``x`` that ``b`` runs along (negative values count from the end).
        act:   Name of an entry of ``activation_funcs``.
        alpha: Negative slope for ``lrelu``; ``None`` picks the table default.
        gain:  Output scale; ``None`` picks the activation's ``def_gain``.
        clamp: If not ``None``, clamp the result to ``[-clamp, clamp]`` (must be >= 0).
        impl:  ``'ref'`` or ``'cuda'``; accepted for compatibility with StyleGAN2-ADA,
               both run this torch-native code on every device.

    Returns:
        Tensor of the same shape and dtype as ``x``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f'bias_act: x must be a torch.Tensor, got {type(x).__name__}')
    if act not in activation_funcs:
        raise ValueError(f'bias_act: unknown activation {act!r}; expected one of {sorted(activation_funcs)}')
    if impl not in ('ref', 'cuda'):
        raise ValueError(f"bias_act: impl must be 'ref' or 'cuda', got {impl!r}")
    if clamp is not None and clamp < 0:
        raise ValueError(f'bias_act: clamp must be None or >= 0, got {clamp}')
    spec = activation_funcs[act]
    alpha = float(spec.def_alpha if alpha is None else alpha)
    gain = float(spec.def_gain if gain is None else gain)

    if b is not None:
        x = x + _bias_along(b, x, dim).to(x.dtype)
    y = spec.func(x, alpha)
    # Multiplying by exactly one would only cost a pass over the tensor.
    y = y if gain == 1 else y * gain
    return y if clamp is None else y.clamp(min=-clamp, max=clamp)


def _bias_along(b, x: torch.Tensor, dim: int) -> torch.Tensor:
    """View the 1-D bias so that it broadcasts along dimension ``dim`` of ``x``."""
    if x.ndim == 0:
        raise ValueError('bias_act: x must have at least one dimension when a bias is given.')
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f'bias_act: dim={dim} is out of range for x with {x.ndim} dimensions.')
    dim %= x.ndim
    if not isinstance(b, torch.Tensor) or b.ndim != 1 or b.shape[0] != x.shape[dim]:
        got = list(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__
        raise ValueError(f'bias_act: b must be a 1-D tensor of length x.shape[{dim}]={x.shape[dim]}, got {got}.')
    return b.view([b.shape[0] if axis == dim else 1 for axis in range(x.ndim)])
