"""Causal Transformer with product-key memory (Lample et al. 2019) on multi-query associative recall.

  python train.py --config=configs/pkm_transformer_mqar.py --workdir=runs/pkm_transformer_mqar
  python eval.py --workdir=runs/pkm_transformer_mqar
  python train.py --config=configs/pkm_transformer_mqar.py:tiny --workdir=runs/tiny_pkm_transformer_mqar   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('pkm_transformer', 'mqar', variant)
