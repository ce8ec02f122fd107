"""Differentiable Neural Computer on the copy task (Graves et al. 2016 sizes, scaled to copy).

  python train.py --config=configs/dnc_copy.py --workdir=/tmp/dnc_copy
  python eval.py --workdir=/tmp/dnc_copy
"""

from memflax.config_defaults import harness_config


def get_config():
  c = harness_config()
  c.model.name = 'dnc'
  c.model.controller_size = 100
  c.model.memory_size = 32
  c.model.memory_width = 20
  c.model.num_read_heads = 1
  c.model.controller_clip = 20.0
  c.task.name = 'copy'
  c.task.num_bits = 8
  c.task.min_length = 1
  c.task.max_length = 20
  c.learning_rate = 1e-3
  c.grad_clip_norm = 10.0
  return c
