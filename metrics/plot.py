"""Small PIL figures for the spectral metrics: line charts, heat maps, and a grid to combine them.

matplotlib is not a dependency; these draw just enough for a readable PNG: axes with "nice" tick
values, a title, axis labels, a legend, optional vertical markers, and a colour bar for heat maps.
"""

from __future__ import annotations

import math

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (23, 190, 207)]
_BG = (255, 255, 255)
_FG = (0, 0, 0)
_GRID = (225, 225, 225)


def _font():
    return PIL.ImageFont.load_default()


def _text_size(draw, text, font):
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def nice_ticks(lo, hi, max_ticks=6):
    """Round tick values covering [lo, hi] (steps of 1, 2 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        hi = lo + (abs(lo) if lo else 1.0)
    raw = (hi - lo) / max(max_ticks - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    v = first
    while v <= hi + step * 1e-9:
        ticks.append(0.0 if abs(v) < step * 1e-9 else v)
        v += step
    return ticks


def _fmt(v):
    if v == 0:
        return '0'
    a = abs(v)
    if a >= 1e4 or a < 1e-3:
        return f'{v:.1e}'
    if a >= 100:
        return f'{v:.0f}'
    return f'{v:.4g}'


def _legend_rows(draw, series, font, width):
    """The labelled series as legend rows that fit `width`: [[(index, series, entry width)]]."""
    rows, used = [], width
    for i, s in enumerate(series):
        if not s[0]:
            continue
        entry = 22 + _text_size(draw, s[0], font)[0] + 16
        if used + entry > width and (not rows or rows[-1]):
            rows.append([])
            used = 0
        rows[-1].append((i, s, entry))
        used += entry
    return rows


def line_chart(series, title='', xlabel='', ylabel='', size=(480, 320), vlines=(), hline=None, xlim=None,
               ylim=None, markers=False):
    """series: [(label, xs, ys)] or [(label, xs, ys, color)]. vlines: x positions drawn dashed."""
    W, H = size
    img = PIL.Image.new('RGB', size, _BG)
    draw = PIL.ImageDraw.Draw(img)
    font = _font()
    left, right, bottom = 62, 12, 40
    legend_rows = _legend_rows(draw, series, font, W - left - right)
    top = 24 + 14 * len(legend_rows)
    x0, x1, y0, y1 = left, W - right, top, H - bottom

    xs_all = np.concatenate([np.asarray(s[1], np.float64) for s in series]) if series else np.zeros(1)
    ys_all = np.concatenate([np.asarray(s[2], np.float64) for s in series]) if series else np.zeros(1)
    ys_all = ys_all[np.isfinite(ys_all)]
    xlo, xhi = xlim if xlim is not None else (float(xs_all.min()), float(xs_all.max()))
    if ylim is not None:
        ylo, yhi = ylim
    elif ys_all.size:
        ylo, yhi = float(ys_all.min()), float(ys_all.max())
        pad = 0.05 * (yhi - ylo) if yhi > ylo else max(abs(yhi), 1.0) * 0.05
        ylo, yhi = ylo - pad, yhi + pad
    else:
        ylo, yhi = 0.0, 1.0
    if hline is not None:
        ylo, yhi = min(ylo, hline), max(yhi, hline)
    if xhi <= xlo:
        xhi = xlo + 1.0
    if yhi <= ylo:
        yhi = ylo + 1.0

    px = lambda x: x0 + (x - xlo) / (xhi - xlo) * (x1 - x0)
    py = lambda y: y1 - (y - ylo) / (yhi - ylo) * (y1 - y0)

    # Grid lines with their tick labels: left of the plot for y, below it for x.
    ticks = [(t, 'y') for t in nice_ticks(ylo, yhi) if ylo <= t <= yhi] + \
            [(t, 'x') for t in nice_ticks(xlo, xhi) if xlo <= t <= xhi]
    for t, axis in ticks:
        label = _fmt(t)
        tw, th = _text_size(draw, label, font)
        if axis == 'y':
            draw.line([(x0, py(t)), (x1, py(t))], fill=_GRID)
            draw.text((x0 - 4 - tw, py(t) - th / 2 - 1), label, fill=_FG, font=font)
        else:
            draw.line([(px(t), y0), (px(t), y1)], fill=_GRID)
            draw.text((px(t) - tw / 2, y1 + 4), label, fill=_FG, font=font)
    for v in vlines:
        if xlo <= v <= xhi:
            x = px(v)
            for ya in range(int(y0), int(y1), 8):
                draw.line([(x, ya), (x, min(ya + 4, y1))], fill=(120, 120, 120))
    if hline is not None:
        draw.line([(x0, py(hline)), (x1, py(hline))], fill=(90, 90, 90))
    draw.rectangle([x0, y0, x1, y1], outline=_FG)

    for i, s in enumerate(series):
        label, xs, ys = s[0], np.asarray(s[1], np.float64), np.asarray(s[2], np.float64)
        color = s[3] if len(s) > 3 else COLORS[i % len(COLORS)]
        pts = [(px(x), py(min(max(y, ylo), yhi))) for x, y in zip(xs, ys) if math.isfinite(y)]
        if len(pts) > 1:
            draw.line(pts, fill=color, width=2)
        if markers or len(pts) == 1:
            for (x, y) in pts:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
    for row, entries in enumerate(legend_rows):     # legend: rows between the title and the plot
        lx, ly = x0, 14 * row
        for i, s, width in entries:
            color = s[3] if len(s) > 3 else COLORS[i % len(COLORS)]
            draw.line([(lx, 27 + ly), (lx + 18, 27 + ly)], fill=color, width=2)
            draw.text((lx + 22, 21 + ly), s[0], fill=_FG, font=font)
            lx += width

    if title:
        tw, _ = _text_size(draw, title, font)
        draw.text(((W - tw) / 2, 6), title, fill=_FG, font=font)
    if xlabel:
        tw, _ = _text_size(draw, xlabel, font)
        draw.text((x0 + (x1 - x0 - tw) / 2, H - 18), xlabel, fill=_FG, font=font)
    if ylabel:
        tw, th = _text_size(draw, ylabel, font)
        label = PIL.Image.new('RGB', (tw + 2, th + 4), _BG)
        PIL.ImageDraw.Draw(label).text((1, 0), ylabel, fill=_FG, font=font)
        label = label.rotate(90, expand=True)
        img.paste(label, (4, int(y0 + (y1 - y0 - label.height) / 2)))
    return img


# Perceptually ordered colour map (dark blue -> purple -> orange -> light yellow), interpolated.
_CMAP_ANCHORS = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
                          [245, 125, 21], [250, 193, 39], [252, 255, 164]], dtype=np.float64)


def colormap(values):
    """Array of values in [0, 1] -> uint8 RGB array of the same shape + (3,)."""
    v = np.clip(np.nan_to_num(np.asarray(values, np.float64), nan=0.0), 0, 1) * (len(_CMAP_ANCHORS) - 1)
    i = np.minimum(np.floor(v).astype(np.int64), len(_CMAP_ANCHORS) - 2)
    f = (v - i)[..., None]
    return np.rint(_CMAP_ANCHORS[i] * (1 - f) + _CMAP_ANCHORS[i + 1] * f).astype(np.uint8)


def heatmap(array, title='', vmin=None, vmax=None, size=256, unit=''):
    """A 2-D array drawn with `colormap` (nearest-neighbour upscaled to `size` px) and a colour bar."""
    a = np.asarray(array, np.float64)
    finite = a[np.isfinite(a)]
    vmin = float(finite.min()) if vmin is None and finite.size else (0.0 if vmin is None else vmin)
    vmax = float(finite.max()) if vmax is None and finite.size else (1.0 if vmax is None else vmax)
    if vmax <= vmin:
        vmax = vmin + 1.0
    rgb = colormap((a - vmin) / (vmax - vmin))
    scale = max(1, size // max(a.shape))
    body = PIL.Image.fromarray(rgb, 'RGB').resize((a.shape[1] * scale, a.shape[0] * scale), PIL.Image.NEAREST)
    font = _font()
    bar_w, pad_top, pad = 12, 22, 8
    W = body.width + bar_w + 60
    H = body.height + pad_top + pad
    img = PIL.Image.new('RGB', (W, H), _BG)
    img.paste(body, (0, pad_top))
    draw = PIL.ImageDraw.Draw(img)
    bar = colormap(np.linspace(1, 0, body.height)[:, None].repeat(bar_w, axis=1))
    img.paste(PIL.Image.fromarray(bar, 'RGB'), (body.width + 6, pad_top))
    draw.rectangle([body.width + 6, pad_top, body.width + 6 + bar_w - 1, pad_top + body.height - 1], outline=_FG)
    for t in nice_ticks(vmin, vmax, max_ticks=5):
        if vmin <= t <= vmax:
            y = pad_top + (1 - (t - vmin) / (vmax - vmin)) * (body.height - 1)
            draw.line([(body.width + 6 + bar_w, y), (body.width + 9 + bar_w, y)], fill=_FG)
            draw.text((body.width + 11 + bar_w, y - 6), _fmt(t) + unit, fill=_FG, font=font)
    if title:
        draw.text((2, 5), title, fill=_FG, font=font)
    return img


def grid(rows, pad=8):
    """Paste a list of rows (lists of images) into one white image."""
    widths = [sum(im.width for im in row) + pad * (len(row) + 1) for row in rows]
    heights = [max(im.height for im in row) for row in rows]
    out = PIL.Image.new('RGB', (max(widths), sum(heights) + pad * (len(rows) + 1)), _BG)
    y = pad
    for row, h in zip(rows, heights):
        x = pad
        for im in row:
            out.paste(im, (x, y))
            x += im.width + pad
        y += h + pad
    return out
