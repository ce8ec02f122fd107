"""Causal Transformer (decoder-only, pre-LN) on associative recall.

  python train.py --config=configs/transformer_associative_recall.py --workdir=runs/transformer_associative_recall
  python eval.py --workdir=runs/transformer_associative_recall
  python train.py --config=configs/transformer_associative_recall.py:tiny --workdir=runs/tiny_transformer_associative_recall   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('transformer', 'associative_recall', variant)
