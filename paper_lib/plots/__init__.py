"""Figures: the shared style and saving (with the numbers beside each figure), the flow figure, token highlights,
95% intervals (error bars, bands, spans)."""

from .flow import plot_feature_flow
from .highlight import (
    highlight_axes,
    highlight_comparison_html,
    highlight_figure,
    highlight_html,
    shade,
)
from .intervals import (
    interval_bounds,
    plot_band,
    plot_interval_bars,
    plot_interval_span,
)
from .style import FIGURE_FORMATS, PUBLISHED_PROFILES, save_figure, save_results, setup_style
