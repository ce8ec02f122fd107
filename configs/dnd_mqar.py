"""Differentiable neural dictionary (memflax/models/dnd.py) on multi-query associative
recall (MQAR).

  python train.py --config=configs/dnd_mqar.py --workdir=runs/dnd_mqar
  python eval.py --workdir=runs/dnd_mqar
  python train.py --config=configs/dnd_mqar.py:tiny --workdir=runs/tiny_dnd_mqar   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('dnd', 'mqar', variant)
