"""Layers, importable by class and constructible by registry name (``LAYERS``)."""

from cnncli.nn.layers.base import LAYERS, ActivatedLayer, ActivationLayer, Layer
from cnncli.nn.layers.conv import Conv2D
from cnncli.nn.layers.dense import Dense, Flatten
from cnncli.nn.layers.pool import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from cnncli.nn.layers.regularize import BatchNorm, Dropout

__all__ = ["LAYERS", "Layer", "ActivatedLayer", "ActivationLayer", "Conv2D", "Dense", "Flatten",
           "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D", "Dropout", "BatchNorm"]
