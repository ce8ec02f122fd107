"""Neural Turing Machine on dynamic N-grams.

  python train.py --config=configs/ntm_ngrams.py --workdir=runs/ntm_ngrams
  python eval.py --workdir=runs/ntm_ngrams
  python train.py --config=configs/ntm_ngrams.py:tiny --workdir=runs/tiny_ntm_ngrams   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('ntm', 'ngrams', variant)
