"""GRU baseline on the copy task.

  python train.py --config=configs/gru_copy.py --workdir=/tmp/gru_copy
"""

from memflax.config_defaults import apply_variant, harness_config


def get_config(variant: str = ''):
  c = harness_config()
  c.model.name = 'gru'
  c.model.hidden_size = 256
  c.model.num_layers = 2
  c.task.name = 'copy'
  c.task.num_bits = 8
  c.task.min_length = 1
  c.task.max_length = 20
  c.batch_size = 32
  c.learning_rate = 1e-3
  c.grad_clip_norm = 1.0
  c.num_train_steps = 2_000
  apply_variant(c, variant, tiny_model=dict(hidden_size=32, num_layers=1))
  return c
