"""metrics/plot.py: the legend wraps into rows instead of running off the chart."""

import numpy as np
import PIL.Image
import PIL.ImageDraw

from metrics import plot


def test_legend_wraps_into_rows_that_fit():
    series = [(f'seed {i} W1 0.{i}{i}', [0, 1], [0, i]) for i in range(6)] + [('', [0, 1], [1, 1])]
    draw = PIL.ImageDraw.Draw(PIL.Image.new('RGB', (10, 10)))
    rows = plot._legend_rows(draw, series, plot._font(), 300)
    assert len(rows) > 1
    assert [i for row in rows for i, _, _ in row] == [0, 1, 2, 3, 4, 5]      # every label once, in order
    assert all(sum(width for _, _, width in row) <= 300 for row in rows)
    one_row = plot.line_chart(series[:1], size=(300, 200))
    wrapped = plot.line_chart(series, size=(300, 200))
    # The plot frame starts lower when the legend needs more rows: its top edge is the first row
    # that is dark across the plot's width (legend text never is).
    def frame_top(img):
        dark = np.asarray(img.convert('L'))[:, 70:280] < 60
        return int(np.argmax(dark.mean(axis=1) > 0.95))
    assert frame_top(one_row) == 24 + 14 and frame_top(wrapped) == 24 + 14 * len(rows)
