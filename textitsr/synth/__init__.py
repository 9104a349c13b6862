"""Generators: everything that fabricates or derives training pairs (the procedural demo world,
changes pasted onto real tiles, captions from masks and spectral change, the training-data recipe,
augmentation). Imports `textitsr.data` for its records and readers; `data` never imports this."""
