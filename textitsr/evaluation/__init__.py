"""Retrieval metrics (strict full-gallery protocol), checkpoint evaluation, benchmark tables."""
