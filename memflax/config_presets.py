"""Model and task presets that every file in configs/ composes: `compose(model, task, variant)`.

A config file is a few lines (which model, which task, anything that differs);
sizes, optimizer settings and the `tiny` variant of each model and task live here
once, so no block of settings is copied between config files.
"""

from __future__ import annotations

import os
import sysconfig

import ml_collections

from memflax.config_defaults import VARIANTS, harness_config, use_fast_memory_training

_NTM_CORE = dict(controller_size=100, memory_size=128, memory_width=20, num_read_heads=1,
                 controller_clip=20.0)
_NTM_HEADS = dict(num_write_heads=1, shift_range=1, memory_init='constant',
                  controller_forget_bias=1.0,  # 10 keeps length counters linear (models/ntm.py)
                  write_sharpen_boost=0.0)     # κ: γ += κ·shift confidence for the write head
_TRANSFORMER = dict(d_model=64, num_heads=4, num_layers=2, d_ff=128, dropout_rate=0.0,
                    max_len=512, positions='sinusoidal')
_DELTA_STACK = dict(d_model=64, num_heads=4, num_layers=2, d_ff=128, update_rule='delta',
                    use_beta=True, qk_norm=True, short_conv=4, output_norm=True,
                    chunk_size=32, mode='chunk')  # 32: fastest on CPU at T ≤ 256; 64 on a GPU
_TINY_NTM = dict(controller_size=32, memory_size=16, memory_width=8)
_TINY_TRANSFORMER = dict(d_model=16, num_heads=2, num_layers=1, d_ff=32)

# Classic sizes: Graves et al. 2014 and pytorch-ntm for the NTM (memory 128 × 20, a
# 100-unit controller); the NTM paper's 3 × 256 LSTM baseline.
MODELS = {
    'ntm': dict(**_NTM_CORE, **_NTM_HEADS, frobenius_norm=True),  # M ← M/‖M‖_F (product card)
    'sparse_ntm': dict(**_NTM_CORE, **_NTM_HEADS, frobenius_norm=False,
                       top_m=8),  # slots each head reads/writes per step (≪ memory_size)
    # 128 slots like the NTM so evaluation lengths up to 80 fit in memory.
    'dnc': dict(_NTM_CORE),
    'lstm': dict(hidden_size=256, num_layers=3),
    'gru': dict(hidden_size=256, num_layers=2, reset_after=False),
    'rnn': dict(hidden_size=256, num_layers=1),
    # Sinusoidal positions, so lengths beyond training can be evaluated up to max_len.
    'transformer': dict(_TRANSFORMER),
    'kv_memory_transformer': dict(**_TRANSFORMER, memory_slots=128, value_size=64),
    # On tasks of independent sequences the store starts empty at every sequence (idle).
    'knn_transformer': dict(**_TRANSFORMER, memory_size=1024, top_k=32, approximate=False,
                            recall_target=0.95, normalize_keys=True, knn_blocks=(-2,)),
    # Product-key memory (Lample et al. 2019) in place of block 1's FFN: 64² slots, each
    # of 4 heads reads its top 8 (memflax/nn/product_key.py).
    'pkm_transformer': dict(**_TRANSFORMER, memory_slots=4096, pkm_heads=4, pkm_topk=8,
                            pkm_key_dim=64, pkm_blocks=(1,), pkm_query_norm='layer'),
    # Sparse Access Memory (Rae et al. 2016): K rows per read, writes to the last read
    # rows or the least-used one; 'sparse' backprop keeps the touched rows per step,
    # never T memories (memflax/nn/sam.py). scan_block −1: beyond 16,384 slots on a CPU
    # the similarity scan goes 1,024 rows at a time, so only memory and usage grow with N.
    'sam': dict(**_NTM_CORE, top_k=4, controller_forget_bias=1.0, backprop='sparse',
                scan_block=-1),
    # Delta-rule matrix memories (Yang et al. 2024, 2025) at the Transformer's widths, the
    # switches as in the papers (memflax/nn/fast_weight_layers.py).
    'deltanet': dict(**_DELTA_STACK, gated=False, output_gate=False),
    'gated_deltanet': dict(**_DELTA_STACK, gated=True, output_gate=True),
    # Titans "memory as a layer" (Behrouz et al. 2025): per head a 2-layer residual MLP
    # memory written by momentum SGD at test time, 16-token chunks (memflax/nn/titans.py).
    # Each token's inner gradient is clipped to norm 10: unclipped, MQAR at T = 128 went
    # non-finite at step 1; clipped, K = 8 / 32 end at 99.9 / 0.7 % (README, MQAR capacity).
    'titans': dict(d_model=64, num_heads=4, num_layers=2, d_ff=128, memory_depth=2,
                   memory_hidden=32, chunk_size=16, conv_size=4, memory_residual=True,
                   normalize_keys=True, max_inner_lr=0.1, max_inner_grad_norm=10.0),
    # Differentiable neural dictionary (Pritzel et al. 2017) written every step within a
    # sequence: 8 nearest keys, δ = 1e-3 as in NEC; capacity 0 = the causal parallel form
    # (memflax/nn/dnd.py, memflax/models/dnd.py).
    'dnd': dict(embed_size=64, key_size=32, value_size=64, hidden_size=128, num_neighbours=8,
                delta=1e-3, capacity=0, conv_size=2, write_gate=True, query_block=0),
}

TINY_MODELS = {
    'ntm': _TINY_NTM, 'dnc': _TINY_NTM, 'sparse_ntm': dict(**_TINY_NTM, top_m=4),
    'lstm': dict(hidden_size=32, num_layers=1), 'gru': dict(hidden_size=32, num_layers=1),
    'rnn': dict(hidden_size=32, num_layers=1),
    'transformer': _TINY_TRANSFORMER,
    'kv_memory_transformer': dict(**_TINY_TRANSFORMER, memory_slots=16, value_size=16),
    'knn_transformer': dict(**_TINY_TRANSFORMER, memory_size=64, top_k=4, knn_blocks=(0,)),
    # One block, so the memory takes its FFN's place (block 0).
    'pkm_transformer': dict(**_TINY_TRANSFORMER, memory_slots=64, pkm_heads=2, pkm_topk=4,
                            pkm_key_dim=16, pkm_blocks=(0,)),
    'sam': dict(**_TINY_NTM, top_k=2),
    'deltanet': dict(d_model=16, num_heads=2, num_layers=1, d_ff=32, chunk_size=8),
    'gated_deltanet': dict(d_model=16, num_heads=2, num_layers=1, d_ff=32, chunk_size=8),
    'titans': dict(d_model=16, num_heads=2, num_layers=1, d_ff=32, memory_hidden=16,
                   chunk_size=4),
    'dnd': dict(embed_size=16, key_size=8, value_size=16, hidden_size=32, num_neighbours=4),
}


def _recurrent_training(clip: float, steps: int):
  def apply(c):
    c.update(batch_size=32, learning_rate=1e-3, grad_clip_norm=clip, num_train_steps=steps)
  return apply


def _transformer_training(c):
  # Pre-LN trains without warm-up; on copy (seed 0) 3e-3 reached 0–0.03 bit errors/seq by
  # step 2000, 1e-3 still ~3 (both with the harness's clip at 50).
  c.update(batch_size=32, learning_rate=3e-3)


def _dnc_training(c):
  # Adam 1e-3, global-norm clip 10, batch 32 (seed 0): ~0.01 bit errors/seq on training
  # batches by step 2000 with 32 or 128 slots.
  c.update(learning_rate=1e-3, grad_clip_norm=10.0)


TRAINING = {
    'ntm': use_fast_memory_training, 'sparse_ntm': use_fast_memory_training, 'dnc': _dnc_training,
    'lstm': _recurrent_training(clip=50.0, steps=5_000),
    'gru': _recurrent_training(clip=1.0, steps=2_000),
    'rnn': _recurrent_training(clip=1.0, steps=2_000),
    'transformer': _transformer_training, 'kv_memory_transformer': _transformer_training,
    'knn_transformer': _transformer_training,
    'pkm_transformer': _transformer_training,
    'sam': use_fast_memory_training,
    'deltanet': _transformer_training, 'gated_deltanet': _transformer_training,
    'titans': _transformer_training,
    'dnd': _transformer_training,
}

# Task sizes as in the NTM paper (Graves et al. 2014, §4) and Zoology (MQAR). `eval` holds
# the sizes eval.py probes: the training maximum, then 2× and 4× where the task allows.
TASKS = {
    'copy': dict(fields=dict(num_bits=8, min_length=1, max_length=20),
                 eval_lengths=(10, 20, 40, 80)),
    'repeat_copy': dict(fields=dict(num_bits=8, min_length=1, max_length=10, min_repeats=1,
                                    max_repeats=10), eval_lengths=(10, 20, 40)),
    'associative_recall': dict(fields=dict(num_bits=6, item_length=3, min_items=2, max_items=6),
                               eval_lengths=(6, 12, 24)),
    'priority_sort': dict(fields=dict(num_bits=8, num_inputs=20, num_outputs=16),
                          eval_lengths=(20,)),
    'ngrams': dict(fields=dict(n=6, seq_length=200), eval_lengths=(200, 400, 800)),
    'mqar': dict(fields=dict(vocab_size=64, num_pairs=8, seq_length=64, min_pairs=0),
                 eval_lengths=(4, 8, 16)),
    'byte_lm': dict(fields=dict(seq_length=128), eval_lengths=()),
}

# Byte-level LM sizes, chosen to train to their README figure in under 15 minutes on a
# 2-core CPU (larger variants are for GPU/TPU).
LM_MODELS = {
    'lstm': dict(hidden_size=256, num_layers=1),
    'transformer': dict(d_model=128, num_heads=4, num_layers=3, d_ff=512),
    'kv_memory_transformer': dict(d_model=128, num_heads=4, num_layers=3, d_ff=512,
                                  memory_slots=256, value_size=128),
    # 256² slots (8.4M value parameters) read 4 × 16 rows per token; block 1 has no FFN.
    'pkm_transformer': dict(d_model=128, num_heads=4, num_layers=3, d_ff=512,
                            memory_slots=65536, pkm_heads=4, pkm_topk=16, pkm_key_dim=128,
                            pkm_blocks=(1,)),
    'deltanet': dict(d_model=128, num_heads=4, num_layers=3, d_ff=512),
    # The Transformer's LM size with one kNN memory block (the second of three) of 2,048
    # entries per head and lane, top-16 (Wu et al. use one memory layer near the top).
    # Retrieval doubles the step's cost on CPU, hence batch 16 (knn_transformer_lm.py).
    'knn_transformer': dict(d_model=128, num_heads=4, num_layers=3, d_ff=512,
                            memory_size=2048, top_k=16, knn_blocks=(1,)),
    'gated_deltanet': dict(d_model=128, num_heads=4, num_layers=3, d_ff=512),
    'titans': dict(d_model=128, num_heads=4, num_layers=3, d_ff=512, memory_hidden=64,
                   chunk_size=32),
}


def _lm_training(c):
  c.update(batch_size=32, learning_rate=2e-3, adam_b2=0.99, grad_clip_norm=1.0,
           lr_schedule='cosine', lr_warmup_steps=100, lr_final_fraction=0.05,
           num_train_steps=1_500, log_every_steps=50, eval_every_steps=250,
           checkpoint_every_steps=500)
  c.eval.num_sequences = 512  # validation windows per evaluation while training
  c.data = ml_collections.ConfigDict()
  c.data.paths = ''          # comma-separated files/directories; '' = Python's stdlib sources
  c.data.dir = ''            # where built datasets live; '' = ~/.cache/memflax/datasets
  c.data.suffixes = '.py'    # files taken from directories


TASK_TRAINING = {'byte_lm': _lm_training}

# Settings of one model on one task, measured to matter (README, "Task table"): `model`
# fields and `harness` fields applied after the model's and the task's presets.
PAIRS = {
    # Padded training lengths (memflax/length_buckets.py): copy's batches are padded to 41
    # steps although lengths 1..20 need 22 on average. Three buckets (13, 27 and 41 steps,
    # each compiled once) cut the NTM's time per training sequence by ~1.5×
    # (benchmarks/train_throughput.py, README).
    # Adam's eps at 1e-6: once copy is solved the gradients are tiny, and a rare large one
    # then makes sign-sized steps (m/sqrt(v) ~ 1). With one device per core (another
    # order of float sums) seed 0 relapsed from 0.0 to 0.57 at 40,000 sequences, spiking
    # at 32,000, and seed 4 swung between 0.3 and 25 from 14,000 on. With 1e-6 seeds 0-4
    # reached < 0.1 after 12k/11k/8k/10k/12k sequences and ended at 0.0 (1e-5 slowed seed 0
    # to 27k). README, "NTM on copy".
    ('ntm', 'copy'): dict(harness=dict(length_buckets=3, adam_eps=1e-6)),
    # The DNC's step costs ~4.4 ms per padded time step at batch 32 on one core, so five
    # buckets (9..41 steps, 25 on average against three's 27.7) save ~10 % of its training
    # time; each more bucket compiles once (~6 s, then kept in the compilation cache).
    ('dnc', 'copy'): dict(harness=dict(length_buckets=5)),
    # Frobenius normalisation divides the whole memory by its norm after every write, so
    # the rows written first have shrunk by the time a query reads them back. Seed 0, 5,000
    # steps: associative recall ended at 5.38 bit errors/seq with it and at 0 without
    # (< 0.1 from step 3,000); repeat copy was at 78 after 5,000 steps with or without it,
    # and without it converged at ~8,000 (0.02 at 12,000), with it still at 69 at 11,000.
    # Recall at lr 3e-3 relapsed on seed 1 (0.71, then 5.5 to the end); at 2e-3 seeds
    # 0/1/2 ended at 0.155/0.012/0.0 and never went back above 1 (README, "Task table").
    ('ntm', 'associative_recall'): dict(model=dict(frobenius_norm=False),
                                        harness=dict(learning_rate=2e-3)),
    # Repeat copy sits at ~80 bit errors/seq until it learns to count repeats, then falls
    # to 0 within ~5,000 steps; when that happens varies by seed and by float rounding.
    # At 15,000 steps (8.5 min on one core) seed 1 fell only to 43.5 before the cosine
    # decay ran out, where seeds 0/2 fell under 1 at 11,000/2,750 steps.
    ('ntm', 'repeat_copy'): dict(model=dict(frobenius_norm=False),
                                 harness=dict(num_train_steps=30_000)),
    # Priority sort: rows of 40 (not 20) and the constant initial memory let the NTM learn
    # a sort the paper's 128 × 20 memory did not: the write head steps through fresh slots
    # (a constant memory gives content addressing nothing to pick by), each row holding a
    # vector and a code of its priority, and the read head finds the next-lower priority by
    # content. At width 20 it wrote by priority into ~30 slots instead (a learned memory
    # gives it slots to pick) and ended at 5.19/5.40/8.99 bit errors/seq (seeds 0/1/2,
    # 200,000 steps), near an ideal bucket sort into 128 slots (~4.5). Width 40 with a
    # learned memory ended at 1.78/12.4/9.64 (100,000 steps); with the constant one
    # 1.53/1.60 on seeds 0/1 after 150,000 steps and 0.972/0.447/0.279 after these 200,000
    # (~24 min on one core). Rows of 64 cost ~35 % more per step and ended at 0.88/1.70/0.33
    # after 150,000 steps. What errors remain sit on priorities within ~0.01 of another
    # (README, "Task table"). Write sharpening (κ = 3) helped at width 20 (6.70 vs 7.59).
    ('ntm', 'priority_sort'): dict(
        model=dict(frobenius_norm=False, memory_width=40, write_sharpen_boost=3.0),
        harness=dict(num_train_steps=200_000, eval_every_steps=5_000,
                     checkpoint_every_steps=10_000)),
    # N-grams counts transitions per 5-bit context in slots it must tell apart, and the
    # counts written first must not shrink. Seed 0, 20,000 steps: 140.5 bits/seq with the
    # NTM defaults (Frobenius on, constant memory), under the 139.6 target (1.1 × the exact
    # Bayes-optimal 126.9) from step 7,000 with these, 130.3 at the end; seeds 1 and 2 end at
    # 129.1 and 127.2, 0.7 % and 0.1 % above their optimum (README, "Task table").
    ('ntm', 'ngrams'): dict(model=dict(frobenius_norm=False, memory_init='learned'),
                            harness=dict(num_train_steps=20_000, eval_every_steps=1_000)),
    # Repeat copy (up to 112 time steps) and N-grams (200) cost 2–4× a copy step: on one core
    # of this CPU the 3 × 256 LSTM ran 2.2 and 1.3 steps/s, so its 5,000-step default would
    # take 38 and 64 minutes. These budgets keep a task-table run under its 30 minutes (the
    # DNC's are set from its copy rate, ~2.6 steps/s, scaled by the sequence lengths).
    ('lstm', 'repeat_copy'): dict(harness=dict(num_train_steps=3_000)),
    ('lstm', 'ngrams'): dict(harness=dict(num_train_steps=1_800, eval_every_steps=100)),
    # Since the DNC's speed-up (2026-11-29) and with three padded lengths (repeat copy's
    # lengths × repeats vary ~10×), one core runs 2.5 DNC repeat-copy steps/s, not 1.0.
    ('dnc', 'repeat_copy'): dict(harness=dict(num_train_steps=4_000, eval_every_steps=200,
                                              length_buckets=3)),
    # With one device per core (2026-11-29) the DNC's batch-32 step takes ~90 ms on
    # associative recall and ~385 ms on N-grams (benchmarks/train_throughput.py), so
    # 30 minutes hold 3x and 4x the 2,000 and 800 steps these tasks had: at those
    # budgets recall seed 0 ended at 3.53 bit errors/seq (seeds 1/2 under 1 at 56,000
    # sequences) and N-grams at 157-171 bits/seq, still falling, against targets ~140.
    ('dnc', 'associative_recall'): dict(harness=dict(num_train_steps=6_000)),
    ('dnc', 'ngrams'): dict(harness=dict(num_train_steps=3_200, eval_every_steps=200)),
    # Priority sort's 36-step batches run ~10 DNC steps/s on both cores: at its old 2,000
    # steps seeds 0/1/2 stopped at 31.0/36.8/30.5 bit errors/seq, at 6,000 (~10 minutes)
    # they end at 10.6/6.2/6.6, against ~4.5 for an ideal bucket sort (README, "Task table").
    ('dnc', 'priority_sort'): dict(harness=dict(num_train_steps=6_000, eval_every_steps=500)),
}

TINY_TASKS = {
    'copy': dict(max_length=5),
    'repeat_copy': dict(max_length=3, max_repeats=3),
    'associative_recall': dict(max_items=3),
    'priority_sort': dict(num_inputs=6, num_outputs=4),
    'ngrams': dict(n=3, seq_length=30),
    'mqar': dict(vocab_size=16, num_pairs=4, seq_length=24),
    'byte_lm': dict(seq_length=32),
}
TINY_EVAL_LENGTHS = {'copy': (5, 10), 'repeat_copy': (3, 6), 'associative_recall': (3, 6),
                     'priority_sort': (6,), 'ngrams': (30, 60), 'mqar': (2, 4), 'byte_lm': ()}


# An NTM whose copy generalises to 4× the trained length (memflax/models/ntm.py docstring):
# seeds 0/1/2 gave 0.0/0.0/0.0 bit errors/seq at length 40 and 0.22/0.0/4.74 at 80.
GENERALISING_NTM = dict(controller_forget_bias=10.0, write_sharpen_boost=3.0,
                        frobenius_norm=False, memory_init='random')


def compose(model: str, task: str, variant: str = '', model_fields: dict | None = None,
            task_fields: dict | None = None, **harness) -> ml_collections.ConfigDict:
  """The config of `model` trained on `task`: harness defaults, then the model's training
  preset, then the pair's own settings (PAIRS), then `model_fields`, `task_fields` and
  `harness` overrides (e.g. num_train_steps=...), then the variant. `model`/`task` may be
  dotted paths to the user's own modules (memflax.extensions)."""
  c = harness_config()
  # A model or task of the user's (a dotted module path, memflax.extensions) has no preset:
  # its own defaults, `model_fields`/`task_fields` and the harness defaults apply.
  pair = PAIRS.get((model, task), {})
  sizes = {**MODELS.get(model, {}), **(LM_MODELS.get(model, {}) if task == 'byte_lm' else {}),
           **pair.get('model', {}), **(model_fields or {})}
  c.model = ml_collections.ConfigDict({'name': model, **sizes})
  spec = TASKS.get(task, dict(fields={}, eval_lengths=c.eval.lengths))
  c.task = ml_collections.ConfigDict({'name': task, **spec['fields'], **(task_fields or {})})
  c.eval.lengths = spec['eval_lengths']
  TRAINING.get(model, lambda c: None)(c)
  TASK_TRAINING.get(task, lambda c: None)(c)
  c.update(pair.get('harness', {}))
  c.update(harness)
  if variant == 'tiny':
    c.model.update(TINY_MODELS.get(model, {}))
    c.task.update(TINY_TASKS.get(task, {}))
    c.update(batch_size=8, num_train_steps=100, log_every_steps=10, eval_every_steps=50,
             checkpoint_every_steps=50, lr_warmup_steps=min(c.lr_warmup_steps, 10))
    c.eval.update(num_sequences=64, lengths=TINY_EVAL_LENGTHS.get(task, c.eval.lengths))
    c.length_buckets = min(c.length_buckets, 2)  # still two shapes, half the compiling
    if 'data' in c:  # a small real corpus: the stdlib's json package
      c.data.paths = os.path.join(sysconfig.get_paths()['stdlib'], 'json')
  elif variant:
    raise ValueError(f'unknown config variant {variant!r}; known: {sorted(VARIANTS)} '
                     '(or none: configs/X.py)')
  return c
