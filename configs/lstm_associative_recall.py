"""LSTM (3 × 256, the NTM paper's baseline) on associative recall.

  python train.py --config=configs/lstm_associative_recall.py --workdir=runs/lstm_associative_recall
  python eval.py --workdir=runs/lstm_associative_recall
  python train.py --config=configs/lstm_associative_recall.py:tiny --workdir=runs/tiny_lstm_associative_recall   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('lstm', 'associative_recall', variant)
