"""Causal Transformer on the copy task (decoder-only, pre-LN; Vaswani et al. 2017 blocks).

  python train.py --config=configs/transformer_copy.py --workdir=/tmp/transformer_copy
  python eval.py --workdir=/tmp/transformer_copy

Sinusoidal positions, so lengths up to max_len can be evaluated; copying needs
an offset of L+1 steps, which relative-position structure in sin/cos supports.
"""

from memflax.config_defaults import harness_config


def get_config():
  c = harness_config()
  c.learning_rate = 1e-3
  c.batch_size = 32
  c.model.name = 'transformer'
  c.model.d_model = 64
  c.model.num_heads = 4
  c.model.num_layers = 2
  c.model.d_ff = 128
  c.model.dropout_rate = 0.0
  c.model.max_len = 512
  c.model.positions = 'sinusoidal'
  c.task.name = 'copy'
  c.task.num_bits = 8
  c.task.min_length = 1
  c.task.max_length = 20
  return c
