"""GRU (2 × 256) on copy.

  python train.py --config=configs/gru_copy.py --workdir=runs/gru_copy
  python eval.py --workdir=runs/gru_copy
  python train.py --config=configs/gru_copy.py:tiny --workdir=runs/tiny_gru_copy   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('gru', 'copy', variant)
