"""Titans (neural memory as a layer, Behrouz et al. 2025) on associative recall.

  python train.py --config=configs/titans_associative_recall.py --workdir=runs/titans_associative_recall
  python eval.py --workdir=runs/titans_associative_recall
  python train.py --config=configs/titans_associative_recall.py:tiny --workdir=runs/tiny_titans_associative_recall   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('titans', 'associative_recall', variant)
