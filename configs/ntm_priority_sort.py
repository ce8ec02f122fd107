"""Neural Turing Machine on priority sort.

  python train.py --config=configs/ntm_priority_sort.py --workdir=runs/ntm_priority_sort
  python eval.py --workdir=runs/ntm_priority_sort
  python train.py --config=configs/ntm_priority_sort.py:tiny --workdir=runs/tiny_ntm_priority_sort   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('ntm', 'priority_sort', variant)
