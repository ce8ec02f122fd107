"""LSTM (3 × 256, the NTM paper's baseline) on multi-query associative recall (MQAR).

  python train.py --config=configs/lstm_mqar.py --workdir=runs/lstm_mqar
  python eval.py --workdir=runs/lstm_mqar
  python train.py --config=configs/lstm_mqar.py:tiny --workdir=runs/tiny_lstm_mqar   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('lstm', 'mqar', variant)
