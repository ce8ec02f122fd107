"""Memorizing Transformer on copy. Every copy batch holds new, independent sequences, so
the kNN store starts empty at each one and the model acts as a Transformer; the memory
pays off on long documents (configs/knn_transformer_lm.py).

  python train.py --config=configs/knn_transformer_copy.py --workdir=runs/knn_transformer_copy
  python eval.py --workdir=runs/knn_transformer_copy
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('knn_transformer', 'copy', variant)
