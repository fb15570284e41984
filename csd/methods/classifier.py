"""The classifier interface: what the round-1 trainers (CSD, CDA) and make_cam need of a
classifier kind; each kind (csd.methods.registry.CLASSIFIERS) gives one."""

from typing import Callable, NamedTuple


class Classifier(NamedTuple):
    """How a classifier kind is trained and loaded:
    setup(settings, ids, labels_csv, device, regime) -> (ids, device, labels, transform),
    build(settings) -> model, fit(model, dataset, step, settings, model_out, history_out,
    device, extras, precision) -> history, loader(make_cam settings) -> load(model_path,
    device) -> the trained model in eval mode, whose `cam(x)` gives [B, 20, h, w] maps."""

    setup: Callable
    build: Callable
    fit: Callable
    loader: Callable
