"""Byte-level language model (Titans) on text files (default: Python's standard library sources).

  python train.py --config=configs/titans_lm.py --workdir=runs/titans_lm
  python eval.py --workdir=runs/titans_lm
  python sample.py --workdir=runs/titans_lm --prompt="def " --length=400 --temperature=0.8 --top_k=40

Your own text: --config.data.paths=DIR_OR_FILE[,...] (--config.data.suffixes=.txt,.md for
directories); built once into --config.data.dir and reused.
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('titans', 'byte_lm', variant)
