"""Differentiable Neural Computer on repeat copy.

  python train.py --config=configs/dnc_repeat_copy.py --workdir=runs/dnc_repeat_copy
  python eval.py --workdir=runs/dnc_repeat_copy
  python train.py --config=configs/dnc_repeat_copy.py:tiny --workdir=runs/tiny_dnc_repeat_copy   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('dnc', 'repeat_copy', variant)
