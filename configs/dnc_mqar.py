"""Differentiable Neural Computer on multi-query associative recall (MQAR).

  python train.py --config=configs/dnc_mqar.py --workdir=runs/dnc_mqar
  python eval.py --workdir=runs/dnc_mqar
  python train.py --config=configs/dnc_mqar.py:tiny --workdir=runs/tiny_dnc_mqar   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('dnc', 'mqar', variant)
