"""Torch-native versions of StyleGAN2-ADA's custom ops.

The submodules keep upstream's module/function layout, so code written against
``torch_utils.ops`` works after changing the import line::

    from stylefreq.ops import bias_act, upfirdn2d, conv2d_resample, fma
    y = bias_act.bias_act(x, b, act='lrelu')
    y = upfirdn2d.upsample2d(x, f)

Everything is built from ordinary differentiable torch ops (no compiler, no CUDA
plugin), so it runs on any device torch supports and autograd provides gradients of
any order.
"""

from . import bias_act
from . import upfirdn2d
from . import conv2d_resample
from . import fma
from . import grid_sample

__all__ = ['bias_act', 'upfirdn2d', 'conv2d_resample', 'fma', 'grid_sample']
