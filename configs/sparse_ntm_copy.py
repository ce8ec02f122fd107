"""NTM with sparse top-M memory access on copy.

  python train.py --config=configs/sparse_ntm_copy.py --workdir=runs/sparse_ntm_copy
  python eval.py --workdir=runs/sparse_ntm_copy
  python train.py --config=configs/sparse_ntm_copy.py:tiny --workdir=runs/tiny_sparse_ntm_copy   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('sparse_ntm', 'copy', variant)
