"""Byte-level language model (Transformer with a 65,536-slot product-key memory in place of
block 1's FFN) on text files (default: Python's standard library sources).

  python train.py --config=configs/pkm_transformer_lm.py --workdir=runs/pkm_transformer_lm
  python eval.py --workdir=runs/pkm_transformer_lm
  python sample.py --workdir=runs/pkm_transformer_lm --prompt="def " --length=400 --temperature=0.8 --top_k=40

Your own text: --config.data.paths=DIR_OR_FILE[,...] (--config.data.suffixes=.txt,.md for
directories); built once into --config.data.dir and reused.
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('pkm_transformer', 'byte_lm', variant)
