"""Readers: every source (LEVIR-CC, Dubai-CCD, folders, GeoTIFF series, a written synthetic world)
yields `BitemporalPair` records; nothing here fabricates pairs (see `textitsr.synth`), and nothing
downstream knows which dataset a pair came from."""

from textitsr.data.pairs import BitemporalPair, PairSource

__all__ = ["BitemporalPair", "PairSource"]
