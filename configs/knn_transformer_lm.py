"""Memorizing Transformer (kNN memory over past segments) as a byte-level language model.

Each batch row reads whole documents segment after segment (task.stream_documents); the
memory block keeps the keys and values of the document's earlier segments (2,048 per head
and row, top-16 retrieval) and starts empty at each new document. Batch 16 rows (lanes):
retrieval doubles the cost of a step on CPU.

  python train.py --config=configs/knn_transformer_lm.py --workdir=runs/knn_transformer_lm
  python eval.py --workdir=runs/knn_transformer_lm

The same model without memory (same parameters, same batches): --config.model.memory_size=0.
"""

from memflax.config_presets import compose


def get_config(variant: str = ''):
  return compose('knn_transformer', 'byte_lm', variant, task_fields=dict(stream_documents=True),
                 batch_size=16)
