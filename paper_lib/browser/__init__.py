"""An offline feature browser: every live SAE feature of each model with its top contexts, activation histogram, top
tokens, autointerp explanation and its matches in every other model, linked both ways (``make paper`` writes it
under the run folder; ``make browse`` serves it on localhost)."""

from .collect import BROWSER_DOMAINS, feature_stats, site_data, sparkline
from .render import context_html, render_site, serve, site_dir
