"""Pure flax.linen building blocks; nothing here knows about models, tasks or training."""
