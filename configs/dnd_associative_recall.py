"""Differentiable neural dictionary (memflax/models/dnd.py) on associative recall.

  python train.py --config=configs/dnd_associative_recall.py \
      --workdir=runs/dnd_associative_recall
  python eval.py --workdir=runs/dnd_associative_recall
  python train.py --config=configs/dnd_associative_recall.py:tiny \
      --workdir=runs/tiny_dnd_associative_recall   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  # 8 taps = 2·(item_length + 1): a key or query can then hold a whole 3-step item.
  return compose('dnd', 'associative_recall', variant, model_fields=dict(conv_size=8))
