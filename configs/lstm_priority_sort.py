"""LSTM (3 × 256, the NTM paper's baseline) on priority sort.

  python train.py --config=configs/lstm_priority_sort.py --workdir=runs/lstm_priority_sort
  python eval.py --workdir=runs/lstm_priority_sort
  python train.py --config=configs/lstm_priority_sort.py:tiny --workdir=runs/tiny_lstm_priority_sort   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('lstm', 'priority_sort', variant)
