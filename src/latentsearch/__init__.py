"""latentsearch: learn, embed, index and search images by content."""

__version__ = "0.1.0"
