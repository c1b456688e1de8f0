"""stylefreq.spectral against independent NumPy references (per-image loops, no torch)."""

import math

import numpy as np
import pytest
import torch

from stylefreq import spectral

# ---------------------------------------------------------------------------------------------
# NumPy references, written from the spec (SSD-GAN's get_fft_feature.py, as documented), one image at a time.


def np_quadrant_swap(m):
    """Move DC from (0, 0) to (H // 2, W // 2) by copying the four quadrants."""
    H, W = m.shape
    h, w = H - H // 2, W - W // 2        # size of the quadrant holding DC (top-left of the input)
    out = np.empty_like(m)
    out[H // 2:, W // 2:] = m[:h, :w]
    out[:H // 2, :W // 2] = m[h:, w:]
    out[H // 2:, :W // 2] = m[:h, w:]
    out[:H // 2, W // 2:] = m[h:, :w]
    return out


def np_radial_mean(m, count_eps=0.0):
    H, W = m.shape
    rows, cols = np.indices(m.shape)
    r = np.sqrt((rows - H // 2) ** 2 + (cols - W // 2) ** 2).astype(int)
    return np.bincount(r.ravel(), m.ravel()) / (np.bincount(r.ravel()) + count_eps)


def np_ssd_feature(images):
    """The official algorithm: gray, FFT + 1e-8 on re and im, ln(sqrt(.. + 1e-10) + 1e-10), quadrant
    swap, floor-radius bincount mean with n + 1e-10, bins [1:-2], min-max without eps."""
    out = []
    for img in np.asarray(images, dtype=np.float64):
        gray = 0.2989 * img[0] + 0.5870 * img[1] + 0.1140 * img[2] if img.shape[0] == 3 else img[0]
        f = np.fft.fft2(gray)
        re, im = f.real + 1e-8, f.imag + 1e-8
        mag = np.log(np.sqrt(re ** 2 + im ** 2 + 1e-10) + 1e-10)
        prof = np_radial_mean(np_quadrant_swap(mag), count_eps=1e-10)[1:-2]
        out.append((prof - prof.min()) / (prof.max() - prof.min()))
    return np.stack(out)


def natural_images(n, c, h, w, seed):
    """Smooth structure (low-passed noise with a 1/f-like falloff) plus texture (oriented sinusoids, noise)."""
    rng = np.random.RandomState(seed)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    falloff = 1 / np.maximum(np.hypot(fy, fx), 1 / max(h, w)) ** 1.5
    out = np.empty([n, c, h, w])
    yy, xx = np.mgrid[:h, :w]
    for i in range(n):
        base = np.fft.ifft2(np.fft.fft2(rng.randn(h, w)) * falloff).real
        base /= np.abs(base).max()
        tex = 0.1 * np.sin(2 * np.pi * (rng.uniform(0.05, 0.45) * xx + rng.uniform(0.05, 0.45) * yy))
        for ch in range(c):
            out[i, ch] = np.clip(0.8 * base + tex + 0.05 * rng.randn(h, w) + 0.1 * rng.randn(), -1, 1)
    return out


def random_images(n, c, h, w, seed):
    return np.random.RandomState(seed).uniform(-1, 1, size=[n, c, h, w])


# ---------------------------------------------------------------------------------------------
# ssd_feature


@pytest.mark.parametrize('res,length', [(32, 20), (48, 31), (128, 88)])
def test_ssd_feature_length_matches_official(res, length):
    assert spectral.ssd_feature_size(res) == length
    x = torch.zeros(2, 3, res, res).uniform_(-1, 1)
    assert spectral.ssd_feature(x).shape == (2, length)


@pytest.mark.parametrize('kind', ['random', 'natural'])
@pytest.mark.parametrize('shape', [(3, 32, 32), (3, 48, 48), (3, 128, 128), (3, 33, 33), (3, 31, 31),
                                   (1, 32, 32), (3, 24, 40), (1, 27, 20)])
def test_ssd_feature_equals_numpy_reference(kind, shape):
    make = random_images if kind == 'random' else natural_images
    n = 2 if shape[1] >= 128 else 3
    x = make(n, *shape, seed=sum(shape))
    ref = np_ssd_feature(x)
    # float64 input: the same function evaluated in float64 (bin for bin, to rounding).
    got64 = spectral.ssd_feature(torch.from_numpy(x)).numpy()
    assert got64.shape == ref.shape
    np.testing.assert_allclose(got64, ref, rtol=0, atol=1e-10)
    # float32 (what training uses) and float16 input (promoted to float32 for the FFT).
    got32 = spectral.ssd_feature(torch.from_numpy(x).float())
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), ref, rtol=0, atol=5e-5)
    got16 = spectral.ssd_feature(torch.from_numpy(x).half())
    assert got16.dtype == torch.float32
    ref16 = np_ssd_feature(torch.from_numpy(x).half().double().numpy())
    np.testing.assert_allclose(got16.numpy(), ref16, rtol=0, atol=5e-5)


def test_ssd_feature_rejects_bad_input():
    with pytest.raises(ValueError, match='channels'):
        spectral.ssd_feature(torch.zeros(1, 2, 32, 32))
    with pytest.raises(ValueError, match='at least 8x8'):
        spectral.ssd_feature(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r'\[N, C, H, W\]'):
        spectral.ssd_feature(torch.zeros(3, 32, 32))


def test_ssd_feature_is_differentiable_float64():
    x = torch.from_numpy(natural_images(2, 3, 9, 8, seed=1)).requires_grad_(True)
    assert torch.autograd.gradcheck(spectral.ssd_feature, (x,), eps=1e-6, atol=1e-5, fast_mode=True)
    x = torch.from_numpy(random_images(2, 1, 8, 9, seed=4)).requires_grad_(True)
    assert torch.autograd.gradcheck(spectral.ssd_feature, (x,), eps=1e-6, atol=1e-5)
    # Second order (R1 in joint mode differentiates the input gradient once more).
    x = torch.from_numpy(random_images(1, 1, 8, 8, seed=2)).requires_grad_(True)
    assert torch.autograd.gradgradcheck(spectral.ssd_feature, (x,), eps=1e-6, atol=1e-4, fast_mode=True)


def test_ssd_feature_keeps_graph_and_device():
    x = torch.zeros(2, 3, 16, 16).uniform_(-1, 1).requires_grad_(True)
    phi = spectral.ssd_feature(x)
    assert phi.requires_grad and phi.device == x.device
    phi.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_ssd_feature_cuda_matches_cpu():
    x = torch.from_numpy(natural_images(4, 3, 64, 64, seed=3)).float()
    np.testing.assert_allclose(spectral.ssd_feature(x.cuda()).cpu().numpy(), spectral.ssd_feature(x).numpy(),
                               rtol=0, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Building blocks


@pytest.mark.parametrize('h,w', [(1, 1), (2, 3), (7, 9), (16, 16), (33, 20)])
def test_radial_bins_match_loop_reference(h, w):
    bins = spectral.RadialBins(h, w)
    index = np.zeros([h, w], dtype=np.int64)
    for u in range(h):
        for v in range(w):
            index[u, v] = math.isqrt((u - h // 2) ** 2 + (v - w // 2) ** 2)
    K = int(index.max()) + 1
    counts = [int((index == k).sum()) for k in range(K)]
    assert bins.center == (h // 2, w // 2)
    assert bins.num_bins == K
    assert bins.index.tolist() == index.ravel().tolist()
    assert bins.counts.tolist() == counts
    np.testing.assert_allclose(bins.frequencies.numpy(), np.arange(K) / max(h, w), rtol=1e-6)


def test_radial_bins_are_cached_per_resolution():
    assert spectral.radial_bins(32, 32) is spectral.radial_bins(32, 32)
    assert spectral.radial_bins(32, 32) is spectral.radial_bins(32, 32, 'cpu')
    assert spectral.radial_bins(32, 32) is not spectral.radial_bins(32, 16)


def test_radial_profile_matches_loop_and_batches():
    rng = np.random.RandomState(0)
    spec = rng.randn(2, 3, 11, 14)
    got = spectral.radial_profile(torch.from_numpy(spec)).numpy()
    for i in range(2):
        for j in range(3):
            ref = np_radial_mean(spec[i, j])
            np.testing.assert_allclose(got[i, j], ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match='bins are for'):
        spectral.radial_profile(torch.zeros(1, 8, 8), bins=spectral.radial_bins(9, 9))


def test_radial_profile_gradcheck():
    spec = torch.randn(2, 6, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(spectral.radial_profile, (spec,))


@pytest.mark.parametrize('window', [None, 'hann'])
@pytest.mark.parametrize('remove_dc', [False, True])
@pytest.mark.parametrize('shift', [False, True])
def test_power_spectrum_matches_numpy(window, remove_dc, shift):
    rng = np.random.RandomState(1)
    gray = rng.uniform(-1, 1, size=[3, 12, 9])
    got = spectral.power_spectrum(torch.from_numpy(gray), window=window, remove_dc=remove_dc, shift=shift).numpy()
    for i in range(3):
        g = gray[i] - gray[i].mean() if remove_dc else gray[i]
        if window == 'hann':
            g = g * np.outer(np.hanning(12), np.hanning(9))
        p = np.abs(np.fft.fft2(g)) ** 2
        if shift:
            p = np.fft.fftshift(p)
        np.testing.assert_allclose(got[i], p, rtol=1e-10, atol=1e-10)
    if shift:
        dc = spectral.power_spectrum(torch.ones(1, 12, 9, dtype=torch.float64)).numpy()[0]
        assert dc[6, 4] == pytest.approx((12 * 9) ** 2) and np.count_nonzero(np.abs(dc) > 1e-9) == 1


def test_spectra_compute_in_float32_and_relate():
    gray = torch.rand(2, 16, 16)
    p32 = spectral.power_spectrum(gray)
    p16 = spectral.power_spectrum(gray.half())
    assert p32.dtype == p16.dtype == torch.float32
    # Parseval for the unnormalised DFT.
    torch.testing.assert_close(p32.sum(dim=(1, 2)), 256 * gray.square().sum(dim=(1, 2)), rtol=1e-5, atol=1e-3)
    mag = spectral.magnitude_spectrum(gray, eps=1e-10)
    torch.testing.assert_close(mag, (p32 + 1e-10).sqrt())
    torch.testing.assert_close(spectral.log_spectrum(gray), ((p32 + 1e-10).sqrt() + 1e-10).log())
    with pytest.raises(ValueError, match='window'):
        spectral.power_spectrum(gray, window='hamming')


def test_to_grayscale():
    x = torch.rand(2, 3, 5, 6, dtype=torch.float64)
    ref = 0.2989 * x[:, 0] + 0.5870 * x[:, 1] + 0.1140 * x[:, 2]
    torch.testing.assert_close(spectral.to_grayscale(x), ref)
    torch.testing.assert_close(spectral.to_grayscale(x, 'mean'), x.mean(1))
    torch.testing.assert_close(spectral.to_grayscale(x, (1, 0, 0)), x[:, 0])
    one = torch.rand(2, 1, 5, 6)
    assert torch.equal(spectral.to_grayscale(one), one[:, 0])
    assert spectral.to_grayscale(torch.rand(2, 4, 5, 6), 'mean').shape == (2, 5, 6)
    with pytest.raises(ValueError, match="weights='mean'"):
        spectral.to_grayscale(torch.rand(2, 4, 5, 6))


def test_minmax_normalize():
    p = torch.tensor([[1.0, 3.0, 2.0], [-2.0, 0.0, 2.0], [4.0, 4.0, 4.0]])
    torch.testing.assert_close(spectral.minmax_normalize(p),
                               torch.tensor([[0.0, 1.0, 0.5], [0.0, 0.5, 1.0], [0.0, 0.0, 0.0]]))
    torch.testing.assert_close(spectral.minmax_normalize(p[:2], eps=1.0),
                               torch.tensor([[0.0, 2 / 3, 1 / 3], [0.0, 0.4, 0.8]]))

