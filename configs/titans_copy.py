"""Titans (neural memory as a layer, Behrouz et al. 2025) on copy.

  python train.py --config=configs/titans_copy.py --workdir=runs/titans_copy
  python eval.py --workdir=runs/titans_copy
  python train.py --config=configs/titans_copy.py:tiny --workdir=runs/tiny_titans_copy   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('titans', 'copy', variant)
