"""The cnncli engine: pure NumPy layers, activations, losses, optimizers and networks.

Imports numpy and the standard library only: no YAML, files, terminals or images.
"""

from cnncli.nn.activations import ACTIVATIONS, Activation, make_activation
from cnncli.nn.initializers import INITIALIZERS
from cnncli.nn.layers import (LAYERS, ActivationLayer, AvgPool2D, BatchNorm, Conv2D, Dense, Dropout,
                              Flatten, GlobalAvgPool2D, Layer, MaxPool2D)
from cnncli.nn.losses import LOSSES, Loss, make_loss
from cnncli.nn.network import Network
from cnncli.nn.optimizers import OPTIMIZERS, SCHEDULES, Optimizer, make_optimizer, make_schedule
from cnncli.nn.parallel import set_threads, threads

__all__ = [
    "ACTIVATIONS", "Activation", "make_activation", "INITIALIZERS", "LAYERS", "Layer", "ActivationLayer",
    "Conv2D", "Dense", "Flatten", "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D", "Dropout", "BatchNorm",
    "LOSSES", "Loss", "make_loss", "Network", "OPTIMIZERS", "SCHEDULES", "Optimizer", "make_optimizer",
    "make_schedule", "set_threads", "threads",
]
