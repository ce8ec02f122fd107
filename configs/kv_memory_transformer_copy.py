"""Transformer with a key-value memory layer on copy.

  python train.py --config=configs/kv_memory_transformer_copy.py --workdir=runs/kv_memory_transformer_copy
  python eval.py --workdir=runs/kv_memory_transformer_copy
  python train.py --config=configs/kv_memory_transformer_copy.py:tiny --workdir=runs/tiny_kv_memory_transformer_copy   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('kv_memory_transformer', 'copy', variant)
