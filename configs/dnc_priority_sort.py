"""Differentiable Neural Computer on priority sort.

  python train.py --config=configs/dnc_priority_sort.py --workdir=runs/dnc_priority_sort
  python eval.py --workdir=runs/dnc_priority_sort
  python train.py --config=configs/dnc_priority_sort.py:tiny --workdir=runs/tiny_dnc_priority_sort   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('dnc', 'priority_sort', variant)
