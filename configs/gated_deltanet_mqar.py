"""Gated DeltaNet (delta rule with a learned decay gate) on multi-query associative recall (MQAR).

  python train.py --config=configs/gated_deltanet_mqar.py --workdir=runs/gated_deltanet_mqar
  python eval.py --workdir=runs/gated_deltanet_mqar
  python train.py --config=configs/gated_deltanet_mqar.py:tiny --workdir=runs/tiny_gated_deltanet_mqar   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('gated_deltanet', 'mqar', variant)
