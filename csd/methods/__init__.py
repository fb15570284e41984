"""The methods: how each trains its classifier, declared once in csd.methods.registry.

irn is the baseline (csd.cam.train_cam); csd (CSD) and cda (CDA) retrain a classifier on a
base method's round-0 pseudo masks; mct is MCTformer-V2, a second classifier kind.
Everything after the classifier is the same for every method.
"""
