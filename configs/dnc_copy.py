"""Differentiable Neural Computer on the copy task (Graves et al. 2016), sized like ntm_copy.

  python train.py --config=configs/dnc_copy.py --workdir=/tmp/dnc_copy
  python eval.py --workdir=/tmp/dnc_copy
  python train.py --config=configs/dnc_copy.py:tiny --workdir=/tmp/tiny   # seconds, for smoke tests
"""

from memflax.config_defaults import apply_variant, harness_config


def get_config(variant: str = ''):
  c = harness_config()
  c.model.name = 'dnc'
  c.model.controller_size = 100
  # 128 slots like ntm_copy, so the eval lengths up to 80 still fit in memory; with the
  # default 32 the model cannot copy anything longer than 32 however well it learns.
  c.model.memory_size = 128
  c.model.memory_width = 20
  c.model.num_read_heads = 1
  c.model.controller_clip = 20.0
  c.task.name = 'copy'
  c.task.num_bits = 8
  c.task.min_length = 1
  c.task.max_length = 20
  # Adam 1e-3 with a global-norm clip of 10 (batch 32, seed 0) got training batches down to
  # ~0.01 bit errors per sequence by step 2000 with 32 or 128 slots, so the default budget fits.
  c.learning_rate = 1e-3
  c.grad_clip_norm = 10.0
  apply_variant(c, variant, tiny_model=dict(controller_size=32, memory_size=16, memory_width=8))
  return c
