"""Layers, one module per kind (conv, pooling, dense and flatten, regularization, the
activation layer); every module here is imported and registers its classes, so a new
file is a new layer. ``base.py`` holds the interface; ``windows.py`` the padding and
window arithmetic that convolution and pooling share."""

from cnncli.nn.discover import import_submodules
from cnncli.nn.layers.base import LAYERS, ActivatedLayer, Layer

import_submodules(__name__, __path__)

from cnncli.nn.layers.activation import ActivationLayer  # noqa: E402  (registered above)
from cnncli.nn.layers.conv import Conv2D  # noqa: E402
from cnncli.nn.layers.dense import Dense, Flatten  # noqa: E402
from cnncli.nn.layers.pool import AvgPool2D, GlobalAvgPool2D, MaxPool2D  # noqa: E402
from cnncli.nn.layers.regularize import BatchNorm, Dropout  # noqa: E402

__all__ = ["LAYERS", "Layer", "ActivatedLayer", "ActivationLayer", "Conv2D", "Dense", "Flatten",
           "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D", "Dropout", "BatchNorm"]
