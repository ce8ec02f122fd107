"""Causal Transformer on the copy task (decoder-only, pre-LN; Vaswani et al. 2017 blocks).

  python train.py --config=configs/transformer_copy.py --workdir=/tmp/transformer_copy
  python eval.py --workdir=/tmp/transformer_copy

Smoke test in seconds (a tiny model, length ≤ 5, 100 steps):

  python train.py --config=configs/transformer_copy.py:tiny --workdir=/tmp/tiny

Sinusoidal positions, so lengths up to max_len can be evaluated; copying needs
an offset of L+1 steps, which relative-position structure in sin/cos supports.
"""

from memflax.config_defaults import apply_variant, harness_config


def get_config(variant: str = ''):
  c = harness_config()
  # Pre-LN trains without warm-up; on seed 0, 3e-3 gave 0 bit errors/seq by step 2000,
  # 1e-3 still ~3 (both with the harness's clip at 50).
  c.learning_rate = 3e-3
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
  apply_variant(c, variant, tiny_model=dict(d_model=16, num_heads=2, num_layers=1, d_ff=32))
  return c
