"""Gated DeltaNet (delta rule with a learned decay gate) on the copy task.

  python train.py --config=configs/gated_deltanet_copy.py --workdir=runs/gated_deltanet_copy
  python eval.py --workdir=runs/gated_deltanet_copy
  python train.py --config=configs/gated_deltanet_copy.py:tiny --workdir=runs/tiny_gated_deltanet_copy   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('gated_deltanet', 'copy', variant)
