"""Crosscoder model diffing beside correlation matching: one BatchTopK dictionary over a parent's and a child's
activations, its shared and exclusive latents, and Minder et al.'s latent-scaling check."""

from .compare import (EXPECTED, agreement_table, case_study_verdicts, disagreement_examples, disagreements,
                      latent_verdicts, pair_table)
from .cost import crosscoder_cost, crosscoder_folders, crosscoder_pairs
from .diff import CLASS_BANDS, CLASSES, class_counts, evaluate, latent_classes, latent_scaling, relative_norms
from .model import BatchTopKCrosscoder
from .store import crosscoder_dir, latent_table, load_crosscoder, paired_activations
from .train import train_crosscoder
