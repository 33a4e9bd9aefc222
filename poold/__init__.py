"""poold keeps a DJ's Promo Only POOL library whole."""

__version__ = "0.1.0"
