"""Memory-augmented Transformer (causal encoder + learnable key-value memory, seed 003)
on the copy task.

  python train.py --config=configs/kv_memory_transformer_copy.py --workdir=/tmp/kv_copy
  python eval.py --workdir=/tmp/kv_copy

The key-value slots are fixed after training, so on copy they can hold at most
generic bit patterns; the attention layers do the copying, as in transformer_copy.
"""

from memflax.config_defaults import harness_config


def get_config():
  c = harness_config()
  c.learning_rate = 1e-3
  c.batch_size = 32
  c.model.name = 'kv_memory_transformer'
  c.model.d_model = 64
  c.model.num_heads = 4
  c.model.num_layers = 2
  c.model.d_ff = 128
  c.model.dropout_rate = 0.0
  c.model.max_len = 512
  c.model.positions = 'sinusoidal'
  c.model.memory_slots = 128
  c.model.value_size = 64
  c.task.name = 'copy'
  c.task.num_bits = 8
  c.task.min_length = 1
  c.task.max_length = 20
  return c
