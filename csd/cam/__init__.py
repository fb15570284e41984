"""CAM stages: the ResNet backbone and classifier (CAMNet), its training (train_cam),
the CAM seeds (make_cam) and their cell statistics (cam_cells)."""
