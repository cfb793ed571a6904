"""feature-tracking: a notebook-first reproduction of *Tracking Universal Features Through Fine-Tuning and
Model Merging* (Horn & Elliott, 2024). One subpackage per concern, named after what it does:

``core`` (config, artifacts, the model-family registry, hook names), ``data`` (corpora, tokenizer, token blocks,
named samples), ``models`` (notebooks 01-03: train, fine-tune, merge, evaluate), ``saes`` (04), ``matching`` (05),
``case_studies`` (06), ``autointerp`` (07), ``report`` (the paper's claims beside ours: RESULTS.md and the
sentences notebooks render from saved JSON), ``plots`` (figure style, the flow figure, token highlights);
``pipeline`` runs the notebooks (``make paper``), ``notebook_tools`` strips them.
"""

__version__ = "0.1.0"

import os as _os

if _os.environ.get("PAPER_PROGRESS") == "text":
    # Headless runs (make paper sets this for its kernels): with ipywidgets installed, tqdm.auto would draw widgets
    # that papermill's log cannot show, so progress bars stay text there. Set before any submodule imports tqdm.
    import tqdm.auto as _tqdm_auto
    import tqdm.std as _tqdm_std

    _tqdm_auto.tqdm, _tqdm_auto.trange = _tqdm_std.tqdm, _tqdm_std.trange
