"""LSTM (3 × 256, the NTM paper's baseline) on copy.

  python train.py --config=configs/lstm_copy.py --workdir=runs/lstm_copy
  python eval.py --workdir=runs/lstm_copy
  python train.py --config=configs/lstm_copy.py:tiny --workdir=runs/tiny_lstm_copy   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('lstm', 'copy', variant)
