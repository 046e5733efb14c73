"""Evaluation metrics; importing this package registers them all."""

from saliencybench.metrics import (  # noqa: F401 - imported for their registrations
    conservation,
    localization,
    mia,
    pixel_perturbation,
    quantus_adapter,
    randomisation,
)
