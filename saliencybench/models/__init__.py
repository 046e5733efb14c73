"""Models (the embedded zoo, torchvision, timm); importing this package registers them."""

from saliencybench.models import (  # noqa: F401 - imported for their registrations
    timm_zoo,
    torchvision_zoo,
    zoo,
)
