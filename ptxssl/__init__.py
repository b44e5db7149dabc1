"""ptxssl: self-supervised chest X-ray encoders for pneumothorax segmentation."""
__version__ = "0.1.0"
