"""Neural Turing Machine on multi-query associative recall (MQAR).

  python train.py --config=configs/ntm_mqar.py --workdir=runs/ntm_mqar
  python eval.py --workdir=runs/ntm_mqar
  python train.py --config=configs/ntm_mqar.py:tiny --workdir=runs/tiny_ntm_mqar   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('ntm', 'mqar', variant)
