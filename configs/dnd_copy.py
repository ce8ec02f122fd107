"""Differentiable neural dictionary on copy. The DND is built for recall (configs/dnd_mqar.py):
on copy its causal key/value streams have to learn to recall the item written T steps back.

  python train.py --config=configs/dnd_copy.py --workdir=runs/dnd_copy
  python eval.py --workdir=runs/dnd_copy
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('dnd', 'copy', variant)
