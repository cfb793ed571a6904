"""Feature dynamics (notebook 08): *when* features go, along a fine-tune and along the merge path.

``trajectory``: checkpoints along each fine-tune (its first steps rerun with snapshots, checked against its log).
``drift``: a parent SAE's features on another model at the same positions (per-feature Pearson r) and the survival
share. ``steps``: the cached evaluation of a checkpoint and the SAE of a snapshot matched to the parent's.
``measures``: the tables (every checkpoint, the case-study features, the fine-tune-length criterion, drift against
matching). ``merge_points`` (cached, through mergekit) and ``merges`` (curves, crossings): linear, SLERP, task
arithmetic and TIES along one mixing parameter, read at each method's accuracy crossing. ``cost``: seconds spent.
"""

from .cost import dynamics_cost, dynamics_folders
from .drift import DriftAccumulator, compute_drift, drift_dir, feature_drift, load_drift, survival_interval
from .measures import block_sums, checkpoint_drift, cohen_kappa, drift_agreement, feature_drift_table, first_below
from .measures import length_verdict, trajectory_table
from .merge_points import METHODS, merge_parents, merge_point_dir, method_config, run_merge, task_weights
from .merges import half_survival_interval, merge_path, methods_table, path_points, survival_at_interval
from .steps import MATCH_METHOD, eval_dir, snapshot_match_dir, snapshot_sae_dir
from .trajectory import Checkpoint, TrajectoryError, checkpoints, fine_tunes, snapshot_steps, trajectory_dir
