"""Causal Transformer with a product-key memory layer (Lample et al. 2019) on copy.

  python train.py --config=configs/pkm_transformer_copy.py --workdir=runs/pkm_transformer_copy
  python eval.py --workdir=runs/pkm_transformer_copy
  python train.py --config=configs/pkm_transformer_copy.py:tiny --workdir=runs/tiny_pkm_transformer_copy   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('pkm_transformer', 'copy', variant)
