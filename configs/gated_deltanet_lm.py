"""Gated DeltaNet (delta rule with a learned decay gate), byte-level language model (default corpus: Python's standard library).

  python train.py --config=configs/gated_deltanet_lm.py --workdir=runs/gated_deltanet_lm
  python eval.py --workdir=runs/gated_deltanet_lm
  python sample.py --workdir=runs/gated_deltanet_lm --prompt="def " --length=400 --temperature=0.8 --top_k=40
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('gated_deltanet', 'byte_lm', variant)
