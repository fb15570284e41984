"""Data: the VOC 2012 + SBD download, the dataset and its splits, image checks, and the
training augmentations."""
