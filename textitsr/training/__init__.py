"""Contrastive training of the fusion + heads on cached frozen-backbone features: sampler, loss, loop."""
