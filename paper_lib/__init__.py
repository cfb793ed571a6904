"""feature-tracking: a notebook-first reproduction of *Tracking Universal Features Through Fine-Tuning and
Model Merging* (Horn & Elliott, 2024). One module per paper section; see README.md."""

__version__ = "0.1.0"
