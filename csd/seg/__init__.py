"""Segmentation stages: DeepLab, its training on the pseudo masks (train_seg), multi-
scale + CRF inference (infer_seg)."""
