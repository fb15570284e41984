"""Every method and classifier kind, declared once; the workflow's rules and scripts read it.

Adding a method is one module with its trainer plus one entry here (and, if it has its own
settings, a config section named by `regime`): docs/methods/README.md.

A trainer is a function of the module named in `trainer` ("module:function"). A round-0
trainer (no `base`) is called
    trainer(voc_root, ids, labels_csv, model_out, history_out, settings, device=, precision=)
and a round-1 trainer (a `base` method whose train_aug pseudo masks it trains on, same seed)
    trainer(voc_root, ids, labels_csv, round0_mask_dir, model_out, history_out, settings,
            device=, precision=, classifier=)
with `classifier` the csd.methods.classifier.Classifier of the method's kind. `settings` is
the kind's config section with the run's `seed`, plus the `regime` section (if any) under
its own name. Both write the classifier file (cam_model.pt) and its history.

The rules pass a method's references ("module:attribute") to the scripts as params, which
load them (csd.runtime.runner.load): so this file is in no rule's code identity, and a new
entry reruns nothing. Nothing here imports torch: the workflow reads it to build the DAG.
"""

from typing import NamedTuple, Optional


class ClassifierKind(NamedTuple):
    settings: str  # the config section of its training settings
    interface: str  # "module:attribute" of its csd.methods.classifier.Classifier

    @property
    def module(self):
        return self.interface.split(":")[0]


class Method(NamedTuple):
    classifier: str  # a key of CLASSIFIERS
    trainer: str  # "module:function"
    base: Optional[str] = None  # the method whose round-0 pseudo masks it trains on
    regime: Optional[str] = None  # the config section of its own settings

    @property
    def module(self):
        return self.trainer.split(":")[0]


# A section `<section>_<kind>` of the config (csd_mct, make_cam_mct) overrides keys of
# `<section>` for the methods of that kind.
CLASSIFIERS = {
    "cam": ClassifierKind("train_cam", "csd.cam.train_cam:CAM_CLASSIFIER"),
    "mct": ClassifierKind("train_mct", "csd.methods.mct.train_mct:MCT_CLASSIFIER"),
}

METHODS = {
    "irn": Method("cam", "csd.cam.train_cam:train_cam"),
    "irn_csd": Method("cam", "csd.methods.csd.train:train_cam_csd", base="irn", regime="csd"),
    "irn_cda": Method("cam", "csd.methods.cda:train_cam_cda", base="irn", regime="cda"),
    "mct": Method("mct", "csd.methods.mct.train_mct:train_mct"),
    "mct_csd": Method("mct", "csd.methods.csd.train:train_cam_csd", base="mct", regime="csd"),
}
