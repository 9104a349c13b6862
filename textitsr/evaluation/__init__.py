"""Retrieval metrics (strict full-gallery protocol) and checkpoint evaluation."""
