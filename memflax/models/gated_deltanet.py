"""Gated DeltaNet (Yang et al., ICLR 2025): DeltaNet with a learned decay per head and
step, S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ with α_t = exp(g_t) ∈ (0, 1], so
the memory can also forget quickly, and an output gate (memflax/nn/fast_weight_layers.py).
"""

from __future__ import annotations

from memflax.models._delta_stack import DeltaStack


class Model(DeltaStack):
  """See memflax.models._delta_stack.DeltaStack; gated and output-gated by default."""

  gated: bool = True
  output_gate: bool = True
