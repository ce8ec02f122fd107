"""Gated DeltaNet (delta rule with a learned decay gate) on associative recall.

  python train.py --config=configs/gated_deltanet_associative_recall.py --workdir=runs/gated_deltanet_associative_recall
  python eval.py --workdir=runs/gated_deltanet_associative_recall
  python train.py --config=configs/gated_deltanet_associative_recall.py:tiny --workdir=runs/tiny_gated_deltanet_associative_recall   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('gated_deltanet', 'associative_recall', variant)
