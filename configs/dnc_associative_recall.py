"""Differentiable Neural Computer on associative recall.

  python train.py --config=configs/dnc_associative_recall.py --workdir=runs/dnc_associative_recall
  python eval.py --workdir=runs/dnc_associative_recall
  python train.py --config=configs/dnc_associative_recall.py:tiny --workdir=runs/tiny_dnc_associative_recall   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('dnc', 'associative_recall', variant)
