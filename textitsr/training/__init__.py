"""Contrastive training on cached frozen-backbone features: cache, sampler, loss, loop."""
