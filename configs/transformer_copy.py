"""Causal Transformer (decoder-only, pre-LN) on copy.

  python train.py --config=configs/transformer_copy.py --workdir=runs/transformer_copy
  python eval.py --workdir=runs/transformer_copy
  python train.py --config=configs/transformer_copy.py:tiny --workdir=runs/tiny_transformer_copy   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('transformer', 'copy', variant)
