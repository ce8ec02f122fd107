"""Transformer with a key-value memory layer on multi-query associative recall (MQAR).

  python train.py --config=configs/kv_memory_transformer_mqar.py --workdir=runs/kv_memory_transformer_mqar
  python eval.py --workdir=runs/kv_memory_transformer_mqar
  python train.py --config=configs/kv_memory_transformer_mqar.py:tiny --workdir=runs/tiny_kv_memory_transformer_mqar   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('kv_memory_transformer', 'mqar', variant)
