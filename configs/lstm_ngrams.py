"""LSTM (3 × 256, the NTM paper's baseline) on dynamic N-grams.

  python train.py --config=configs/lstm_ngrams.py --workdir=runs/lstm_ngrams
  python eval.py --workdir=runs/lstm_ngrams
  python train.py --config=configs/lstm_ngrams.py:tiny --workdir=runs/tiny_lstm_ngrams   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('lstm', 'ngrams', variant)
