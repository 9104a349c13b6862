"""textitsr: cross-modal retrieval between text and bitemporal remote-sensing image pairs."""

__version__ = "0.1.0"
