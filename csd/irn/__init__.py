"""IRN stages: inter-pixel relation labels (ir_label), the boundary network (edge_net)
and its training (train_irn), the random walk to pseudo masks (make_sem_seg)."""
