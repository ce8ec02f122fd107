"""Transformer with a key-value memory layer on associative recall.

  python train.py --config=configs/kv_memory_transformer_associative_recall.py --workdir=runs/kv_memory_transformer_associative_recall
  python eval.py --workdir=runs/kv_memory_transformer_associative_recall
  python train.py --config=configs/kv_memory_transformer_associative_recall.py:tiny --workdir=runs/tiny_kv_memory_transformer_associative_recall   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('kv_memory_transformer', 'associative_recall', variant)
