"""feature-tracking: a notebook-first reproduction of *Tracking Universal Features Through Fine-Tuning and
Model Merging* (Horn & Elliott, 2024). One subpackage per concern, named after what it does:

``core`` (config, artifacts, the model-family registry, hook names), ``data`` (corpora, tokenizer, token blocks,
named samples), ``models`` (notebooks 01-03: train, fine-tune, merge, evaluate), ``saes`` (04), ``matching`` (05),
``case_studies`` (06), ``autointerp`` (07), ``report`` (the paper's claims beside ours: RESULTS.md and the
sentences notebooks render from saved JSON), ``plots`` (figure style, the flow figure, token highlights);
``pipeline`` runs the notebooks (``make paper``), ``notebook_tools`` strips them.
"""

__version__ = "0.1.0"
