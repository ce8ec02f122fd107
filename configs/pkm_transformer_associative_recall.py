"""Causal Transformer with a product-key memory layer (Lample et al. 2019) on associative recall.

  python train.py --config=configs/pkm_transformer_associative_recall.py --workdir=runs/pkm_transformer_associative_recall
  python eval.py --workdir=runs/pkm_transformer_associative_recall
  python train.py --config=configs/pkm_transformer_associative_recall.py:tiny --workdir=runs/tiny_pkm_transformer_associative_recall   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('pkm_transformer', 'associative_recall', variant)
