"""Training: one loop (:mod:`~saliencybench.training.loop`) and the recipes that feed it
(:mod:`~saliencybench.training.recipes`: the default zoo on ``synthetic``, NIB-VGG on CIFAR,
ResNet50 on CUB).

Direction of imports: ``training`` imports ``models`` (architectures, the checkpoint writer)
and ``datasets`` (the data it trains on); neither of them imports ``training``, and it never
imports ``benchmark`` (whose ``saliencybench train`` command calls it). Nothing here registers
anything, so importing the package is not needed for the registries.
"""
