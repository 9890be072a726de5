"""zapmulti: multi-task attribute classification and similar-shoe search for footwear images."""

__version__ = "0.1.0"
