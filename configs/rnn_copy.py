"""Elman RNN (1 × 256) on copy.

  python train.py --config=configs/rnn_copy.py --workdir=runs/rnn_copy
  python eval.py --workdir=runs/rnn_copy
  python train.py --config=configs/rnn_copy.py:tiny --workdir=runs/tiny_rnn_copy   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('rnn', 'copy', variant)
