"""Neural Turing Machine on the copy task (classic sizes: Graves et al. 2014, pytorch-ntm).

  python train.py --config=configs/ntm_copy.py --workdir=/tmp/ntm_copy
  python eval.py --workdir=/tmp/ntm_copy
  python train.py --config=configs/ntm_copy.py:tiny --workdir=/tmp/tiny   # seconds, for smoke tests
"""

from memflax.config_defaults import apply_variant, harness_config, use_fast_memory_training


def get_config(variant: str = ''):
  c = harness_config()
  c.model.name = 'ntm'
  c.model.controller_size = 100
  c.model.memory_size = 128
  c.model.memory_width = 20
  c.model.num_read_heads = 1
  c.model.num_write_heads = 1
  c.model.shift_range = 1
  c.model.frobenius_norm = True   # M ← M/‖M‖_F after each write (product card)
  c.model.memory_init = 'constant'
  c.model.controller_clip = 20.0
  use_fast_memory_training(c)
  c.task.name = 'copy'
  c.task.num_bits = 8
  c.task.min_length = 1
  c.task.max_length = 20
  apply_variant(c, variant, tiny_model=dict(controller_size=32, memory_size=16, memory_width=8))
  return c
