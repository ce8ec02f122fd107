"""Neural Turing Machine on repeat copy.

  python train.py --config=configs/ntm_repeat_copy.py --workdir=runs/ntm_repeat_copy
  python eval.py --workdir=runs/ntm_repeat_copy
  python train.py --config=configs/ntm_repeat_copy.py:tiny --workdir=runs/tiny_ntm_repeat_copy   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('ntm', 'repeat_copy', variant)
