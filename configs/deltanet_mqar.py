"""DeltaNet (delta-rule matrix memory, chunkwise-parallel training) on multi-query associative recall (MQAR).

  python train.py --config=configs/deltanet_mqar.py --workdir=runs/deltanet_mqar
  python eval.py --workdir=runs/deltanet_mqar
  python train.py --config=configs/deltanet_mqar.py:tiny --workdir=runs/tiny_deltanet_mqar   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('deltanet', 'mqar', variant)
