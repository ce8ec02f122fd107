"""Sparse Access Memory (Rae et al. 2016) on copy.

  python train.py --config=configs/sam_copy.py --workdir=runs/sam_copy
  python eval.py --workdir=runs/sam_copy
  python train.py --config=configs/sam_copy.py:tiny --workdir=runs/tiny_sam_copy   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('sam', 'copy', variant)
