"""rmda_jax: RMDA (Regularized Modernized Dual Averaging) for structured training in JAX.

The public API; see the README for a quickstart.
"""

from rmda_jax._baselines import ProxAdamState
from rmda_jax._baselines import ProxSGDState
from rmda_jax._baselines import prox_adam
from rmda_jax._baselines import prox_sgd
from rmda_jax._baselines import prox_ssi
from rmda_jax._coupled import CoupledGroupLasso
from rmda_jax._coupled import CoupledGroups
from rmda_jax._coupled import GroupSet
from rmda_jax._coupled import Slice
from rmda_jax._coupled import attention_heads
from rmda_jax._coupled import coupled_group_lasso
from rmda_jax._coupled import head_and_neuron_lasso
from rmda_jax._coupled import mlp_neurons
from rmda_jax._ramda import RAMDAState
from rmda_jax._ramda import ramda
from rmda_jax._ramda import ramda_multistep
from rmda_jax._rmda import RMDAState
from rmda_jax._rmda import rmda
from rmda_jax._rmda import rmda_multistep
from rmda_jax._structured import structured_params
from rmda_jax.metrics import LeafRank
from rmda_jax.metrics import LeafReport
from rmda_jax.metrics import RankReport
from rmda_jax.metrics import SparsityReport
from rmda_jax.metrics import group_sparsity
from rmda_jax.metrics import group_support
from rmda_jax.metrics import rank_report
from rmda_jax.metrics import sparsity
from rmda_jax.metrics import sparsity_report
from rmda_jax.metrics import support_changes
from rmda_jax.regularizers import GroupLasso
from rmda_jax.regularizers import GroupRegularizer
from rmda_jax.regularizers import L1
from rmda_jax.regularizers import NuclearNorm
from rmda_jax.regularizers import Regularizer
from rmda_jax.regularizers import SparseGroupLasso
from rmda_jax.regularizers import default_mask
from rmda_jax.regularizers import group_lasso
from rmda_jax.regularizers import l1
from rmda_jax.regularizers import nuclear_norm
from rmda_jax.regularizers import sparse_group_lasso

__version__ = "0.1.0"

__all__ = [
    "RMDAState",
    "rmda",
    "rmda_multistep",
    "structured_params",
    "RAMDAState",
    "ramda",
    "ramda_multistep",
    "ProxSGDState",
    "ProxAdamState",
    "prox_sgd",
    "prox_adam",
    "prox_ssi",
    "Regularizer",
    "GroupRegularizer",
    "L1",
    "GroupLasso",
    "NuclearNorm",
    "SparseGroupLasso",
    "default_mask",
    "l1",
    "group_lasso",
    "nuclear_norm",
    "sparse_group_lasso",
    "sparsity",
    "group_sparsity",
    "group_support",
    "support_changes",
    "sparsity_report",
    "SparsityReport",
    "LeafReport",
    "rank_report",
    "RankReport",
    "LeafRank",
    "CoupledGroupLasso",
    "CoupledGroups",
    "GroupSet",
    "Slice",
    "attention_heads",
    "coupled_group_lasso",
    "head_and_neuron_lasso",
    "mlp_neurons",
]
