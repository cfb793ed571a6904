"""Model stitching (notebook 10; Chen et al. 2025): affine maps between the residual streams of a small and a large
model of one family, and what they carry across: next-token predictions, SAEs, probes and steering vectors.

- ``family``: the two models (the small ``stitching`` family and notebook 09's deeper base), their text and hooks;
- ``pairing``: linear CKA between every layer of the two, and the layer pair read from it;
- ``maps`` and ``store``: the up and down maps, trained jointly, cached per model pair and layer pair;
- ``forward``: next-token loss through the stitch and the round trips;
- ``transfer``: an SAE carried through the maps (the paper's Eq. 6), evaluated and matched against native SAEs;
- ``flops``: the large model's SAE trained from the carried SAE and from scratch, FLOPs to one explained variance;
- ``probes`` and ``steering``: probes and difference-of-means vectors carried across;
- ``finetune``: beyond the paper, the maps between the deeper base and its own fine-tune;
- ``steps``: what the cached steps share, and the quick ones; ``cost``: the seconds they add, beside notebook 01's.
"""

from .family import large, small
from .maps import StitchMaps, explained_variance, fit_maps, least_squares
from .finetune import fine_tune
from .flops import flops_step as sae_flops
from .pairing import pairing
from .probes import probes_step as carried_probes
from .steps import losses, pair, transfer
from .store import load_maps, maps_dir, maps_record
from .transfer import transfer_sae

__all__ = [
    "StitchMaps", "carried_probes", "explained_variance", "fine_tune", "fit_maps", "large", "least_squares",
    "load_maps", "losses", "maps_dir", "maps_record", "pair", "pairing", "sae_flops", "small", "transfer",
    "transfer_sae",
]
