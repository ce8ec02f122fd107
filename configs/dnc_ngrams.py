"""Differentiable Neural Computer on dynamic N-grams.

  python train.py --config=configs/dnc_ngrams.py --workdir=runs/dnc_ngrams
  python eval.py --workdir=runs/dnc_ngrams
  python train.py --config=configs/dnc_ngrams.py:tiny --workdir=runs/tiny_dnc_ngrams   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('dnc', 'ngrams', variant)
