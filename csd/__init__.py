"""CSD: cross-domain semantic decoupling for weakly-supervised semantic segmentation.

All real logic of the workflow lives in this package; `workflow/scripts/` only unpack
the `snakemake` object and call one function from here.
"""

__version__ = "0.1.0"
