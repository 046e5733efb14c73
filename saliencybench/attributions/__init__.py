"""Attribution methods: one module per family; importing this package registers them all."""

from saliencybench.attributions import (  # noqa: F401 - imported for their registrations
    baselines,
    cam,
    deeplift,
    dga,
    fullgrad,
    gradient,
    lrp,
    occlusion,
    path,
    rise,
)
