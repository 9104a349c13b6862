"""Frozen-backbone features and model encodings, below training, evaluation and the index.

`encode`: load a checkpoint once per process, pick the device and backbone precision, and turn texts
and RGB pairs into embeddings. `cache`: the memory-mapped backbone feature cache of one split of a source.
"""
