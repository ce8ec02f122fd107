"""DeltaNet (delta-rule matrix memory, chunkwise-parallel training) on associative recall.

  python train.py --config=configs/deltanet_associative_recall.py --workdir=runs/deltanet_associative_recall
  python eval.py --workdir=runs/deltanet_associative_recall
  python train.py --config=configs/deltanet_associative_recall.py:tiny --workdir=runs/tiny_deltanet_associative_recall   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('deltanet', 'associative_recall', variant)
