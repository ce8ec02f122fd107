"""DeltaNet (delta-rule matrix memory, chunkwise-parallel training) on the copy task.

  python train.py --config=configs/deltanet_copy.py --workdir=runs/deltanet_copy
  python eval.py --workdir=runs/deltanet_copy
  python train.py --config=configs/deltanet_copy.py:tiny --workdir=runs/tiny_deltanet_copy   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('deltanet', 'copy', variant)
