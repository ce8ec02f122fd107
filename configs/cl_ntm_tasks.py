"""Continual learning with the NTM: copy → repeat copy → associative recall, a snapshot after each task.

  python train.py --config=configs/cl_ntm_tasks.py --workdir=runs/cl_ntm
  python train.py --config=configs/cl_ntm_tasks.py --workdir=runs/cl_ntm_replay \
      --config.continual.strategy=replay
  python eval.py --workdir=runs/cl_ntm --snapshot=1

num_train_steps is steps *per task*; the three tasks share the NTM's optimizer preset
(batch 8) and one model through the padded interface (memflax/continual/padded.py).
Repeat copy is shortened to ≤ 6 vectors × ≤ 4 repeats (32 steps, like associative
recall; the paper's 10 × 10 is 112 steps, 3.5× the time per step) so the sequence
trains in under 15 minutes on 2 CPU cores.
Strategies: --config.continual.strategy=naive|l2|ewc|replay, hyperparameters in the
`continual` section (memflax/continual/config.py). `:tiny` is a smoke test.
"""

from memflax.continual.config import compose_sequence


def get_config(variant: str = ''):
  return compose_sequence('ntm', ('copy', 'repeat_copy', 'associative_recall'), variant,
                          task_fields={'repeat_copy': dict(max_length=6, max_repeats=4)},
                          num_train_steps=1_500, eval_every_steps=500,
                          checkpoint_every_steps=500, eval_sequences=500)
