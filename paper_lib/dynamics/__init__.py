"""Feature dynamics (notebook 08): *when* features go, along a fine-tune and along the merge path.

``trajectory``: checkpoints along each fine-tune (its first steps rerun with snapshots, checked against its log);
``drift``: a parent SAE's features on another model at the same positions, per-feature Pearson r, and the survival
share; ``measures``: loss, accuracy, drift and the parent SAE's fit at every checkpoint, the case-study features'
drift, the fine-tune-length criterion, and full SAEs at a few snapshots matched to the parent's (drift against
matching); ``merges``: linear, SLERP, task arithmetic and TIES through mergekit along one mixing parameter, with
accuracy and both parents' feature survival, read at each method's accuracy crossing.
"""

from .drift import DriftAccumulator, compute_drift, drift_dir, feature_drift, load_drift, survival_interval
from .measures import (
    checkpoint_drift,
    cohen_kappa,
    drift_agreement,
    eval_dir,
    feature_drift_table,
    first_below,
    length_verdict,
    snapshot_match_dir,
    snapshot_sae_dir,
    trajectory_table,
)
from .merges import (
    METHODS,
    half_survival_interval,
    merge_path,
    merge_point_dir,
    method_config,
    methods_table,
    path_points,
    task_weights,
)
from .cost import dynamics_cost, dynamics_folders
from .trajectory import Checkpoint, TrajectoryError, checkpoints, fine_tunes, snapshot_steps, trajectory_dir
