"""ddjax: train many width-masked networks at once to study training dynamics."""
__version__ = "0.1.0"
