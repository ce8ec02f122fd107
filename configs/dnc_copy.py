"""Differentiable Neural Computer on copy.

  python train.py --config=configs/dnc_copy.py --workdir=runs/dnc_copy
  python eval.py --workdir=runs/dnc_copy
  python train.py --config=configs/dnc_copy.py:tiny --workdir=runs/tiny_dnc_copy   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('dnc', 'copy', variant)
