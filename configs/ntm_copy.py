"""Neural Turing Machine on copy.

  python train.py --config=configs/ntm_copy.py --workdir=runs/ntm_copy
  python eval.py --workdir=runs/ntm_copy
  python train.py --config=configs/ntm_copy.py:tiny --workdir=runs/tiny_ntm_copy   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('ntm', 'copy', variant)
