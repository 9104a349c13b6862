"""Data layer: every source (LEVIR-CC, Dubai-CCD, folders, GeoTIFF series, synthetic) yields
`BitemporalPair` records; nothing downstream knows which dataset a pair came from."""

from textitsr.data.pairs import BitemporalPair, PairSource

__all__ = ["BitemporalPair", "PairSource"]
