"""Neural Turing Machine on associative recall.

  python train.py --config=configs/ntm_associative_recall.py --workdir=runs/ntm_associative_recall
  python eval.py --workdir=runs/ntm_associative_recall
  python train.py --config=configs/ntm_associative_recall.py:tiny --workdir=runs/tiny_ntm_associative_recall   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('ntm', 'associative_recall', variant)
