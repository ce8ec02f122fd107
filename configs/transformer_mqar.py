"""Causal Transformer (decoder-only, pre-LN) on multi-query associative recall (MQAR).

  python train.py --config=configs/transformer_mqar.py --workdir=runs/transformer_mqar
  python eval.py --workdir=runs/transformer_mqar
  python train.py --config=configs/transformer_mqar.py:tiny --workdir=runs/tiny_transformer_mqar   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('transformer', 'mqar', variant)
