"""Layer-wise evolution through fine-tuning in a deeper model, and feature persistence per layer (notebook 09).

- ``family``: the deeper family (registry ``layerwise``), its depth and each layer's SAE configuration;
- ``similarity``: mean token cosine and linear CKA between the base and each fine-tune at every depth;
- ``matching``: per-layer SAEs, their diagnostics, and per-layer (and next-layer) matching with ceiling and floor;
- ``views``: one concept's feature at every layer, token by token;
- ``models``: accuracy of the deeper family beside the one-layer family at equal training tokens;
- ``cost``: the build seconds notebook 09 adds, beside notebook 01's.
"""

from .cost import downstream_folders, layerwise_cost, layerwise_folders
from .family import activation_scale, base, fine_tunes, layer_config, layer_hook, layers, n_layers, names
from .matching import ceiling, cross_layer, layer_sae_dir, persistence_table, same_layer, sae_table, survival_flags
from .models import model_table
from .similarity import linear_cka, mean_cosine, similarity_dir, similarity_table
from .views import concept_views

__all__ = [
    "activation_scale", "base", "ceiling", "concept_views", "cross_layer", "downstream_folders", "fine_tunes",
    "layer_config", "layer_hook", "layer_sae_dir", "layers", "layerwise_cost", "layerwise_folders", "linear_cka",
    "mean_cosine", "model_table", "n_layers", "names", "persistence_table", "sae_table", "same_layer",
    "similarity_dir", "similarity_table", "survival_flags",
]
