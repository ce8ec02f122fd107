"""Checkpoint-based continual learning: one model trained on a sequence of tasks, an
immutable orbax snapshot after each, regularisers against forgetting, forgetting metrics.

  config.py      the `continual` config section and each task's sub-config
  padded.py      one model for tasks of different widths (zero-padded inputs, sliced logits)
  strategies.py  naive / l2 snapshot coupling / EWC (empirical or exact Fisher, offline or
                 online) as pure functions
  replay.py      reservoir-sampled replay buffer and its loss term
  snapshots.py   <workdir>/snapshots/<index>_<task>: write-once orbax checkpoints
  runner.py      train_sequence(config, workdir): each task an ordinary resumable run
  metrics.py     R matrix -> ACC, BWT, FWT, forgetting (GEM / RWalk)
  report.py      continual.json and the heatmap
  evaluation.py  any snapshot on any task of its sequence (eval.py --snapshot)
"""
