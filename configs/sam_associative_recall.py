"""Sparse Access Memory (Rae et al. 2016) on associative recall.

Two read heads and a longer schedule than copy: seed 0 reached 0.86 bit errors/seq at step 8,000 and 0.06 at
14,000 with 30,000 scheduled steps (1 read head: 4.3 at 10,000).

  python train.py --config=configs/sam_associative_recall.py --workdir=runs/sam_associative_recall
  python eval.py --workdir=runs/sam_associative_recall
  python train.py --config=configs/sam_associative_recall.py:tiny --workdir=runs/tiny_sam_associative_recall   # seconds
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('sam', 'associative_recall', variant, model_fields=dict(num_read_heads=2),
                 num_train_steps=20_000)
