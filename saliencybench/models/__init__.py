"""Models (the embedded zoo, torchvision, timm, NIB-VGG, grid settings, the checkpoint loader);
importing this package registers them.

Direction of imports: ``models`` imports only ``core`` (never ``datasets``, ``training`` or
``benchmark``); ``datasets`` may import ``models`` (a grid dataset wraps its base model in
:class:`~saliencybench.models.grid_settings.GridSetting`) and ``training`` imports both.
"""

from saliencybench.models import (  # noqa: F401 - imported for their registrations
    timm_zoo,
    torchvision_zoo,
    zoo,
)
