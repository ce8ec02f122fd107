"""LSTM (3 × 256, the NTM paper's baseline) on repeat copy.

  python train.py --config=configs/lstm_repeat_copy.py --workdir=runs/lstm_repeat_copy
  python eval.py --workdir=runs/lstm_repeat_copy
  python train.py --config=configs/lstm_repeat_copy.py:tiny --workdir=runs/tiny_lstm_repeat_copy   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('lstm', 'repeat_copy', variant)
