"""Titans (neural memory as a layer, Behrouz et al. 2025) on multi-query associative recall (MQAR).

  python train.py --config=configs/titans_mqar.py --workdir=runs/titans_mqar
  python eval.py --workdir=runs/titans_mqar
  python train.py --config=configs/titans_mqar.py:tiny --workdir=runs/tiny_titans_mqar   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('titans', 'mqar', variant)
