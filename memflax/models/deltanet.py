"""DeltaNet (Yang et al., NeurIPS 2024): a residual stack whose token mixer is a matrix
memory per head written by the delta rule, S_t = (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ,
and read as o_t = S_tᵀ q_t; trained with the chunkwise-parallel form, generated with the
recurrent one (memflax/nn/delta_rule.py, memflax/models/_delta_stack.py).
`update_rule='linear'` makes it a linear-attention stack (S_t = S_{t−1} + β_t k_t v_tᵀ).
"""

from __future__ import annotations

from memflax.models._delta_stack import DeltaStack


class Model(DeltaStack):
  """See memflax.models._delta_stack.DeltaStack; here without the decay gate by default."""
