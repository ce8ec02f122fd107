"""DeltaNet (delta-rule matrix memory, chunkwise-parallel training), byte-level language model (default corpus: Python's standard library).

  python train.py --config=configs/deltanet_lm.py --workdir=runs/deltanet_lm
  python eval.py --workdir=runs/deltanet_lm
  python sample.py --workdir=runs/deltanet_lm --prompt="def " --length=400 --temperature=0.8 --top_k=40
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('deltanet', 'byte_lm', variant)
