"""ToyVOC: a synthetic, context-biased PASCAL VOC benchmark written as a real VOCdevkit tree.

Real VOC cannot be downloaded everywhere, so every stage of the pipeline can run on this
generated dataset instead. It reproduces the problem CSD attacks: each class has a
preferred background context (boat <-> water, train <-> rails, ...) and some classes have
co-occurring partners (person with horse/bicycle/motorbike, chair with diningtable, ...).
`context_strength` s sets how often these shortcuts hold (s = 0 is the unbiased control),
`single_label_fraction` sets the share of single-label images (CSD's source domain).

The generator by concern: world (classes, contexts, shortcuts, plans), shapes and
backgrounds (looks), render (one image), generate (the tree); pretrain is the
procedural pretraining set drawn from the same world.

Determinism: every image draws from its own generators seeded by (seed, image index,
stream), so the output does not depend on generation order, and the geometry stream never
sees s, so objects and their positions are the same for every context_strength.
"""
