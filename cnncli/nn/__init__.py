"""The cnncli engine: pure NumPy layers, activations, losses, optimizers and networks.

Imports numpy and the standard library only (and threadpoolctl, on first use, to set
BLAS's thread count): no YAML, files, terminals, images, and nothing from the rest of
cnncli. Components of your own subclass the base classes here and are made known by
name with :func:`register`; ``docs/EXTENDING.md`` shows how.
"""

from cnncli.nn.activations import ACTIVATIONS, Activation, make_activation
from cnncli.nn.describe import Equation, Explanation
from cnncli.nn.errors import CheckpointError, ConfigError, DataError, InputError, RegistrationError, ShapeError
from cnncli.nn.initializers import INITIALIZERS, Initializer, make_initializer
from cnncli.nn.layers import (LAYERS, ActivatedLayer, ActivationLayer, AvgPool2D, BatchNorm, Conv2D, Dense,
                              Dropout, Flatten, GlobalAvgPool2D, Layer, MaxPool2D)
from cnncli.nn.losses import LOSSES, ClassLoss, LogitsLoss, Loss, make_loss
from cnncli.nn.network import Network
from cnncli.nn.optimizers import OPTIMIZERS, Optimizer, make_optimizer
from cnncli.nn.parallel import set_threads, threads
from cnncli.nn.registry import Registry, register
from cnncli.nn.schedules import SCHEDULES, Schedule, make_schedule

#: Every registry, by the kind of component it holds.
REGISTRIES = {r.kind: r for r in (LAYERS, ACTIVATIONS, LOSSES, OPTIMIZERS, SCHEDULES, INITIALIZERS)}

__all__ = [
    "register", "Registry", "REGISTRIES",
    "Layer", "ActivatedLayer", "ActivationLayer", "Conv2D", "Dense", "Flatten", "MaxPool2D", "AvgPool2D",
    "GlobalAvgPool2D", "Dropout", "BatchNorm", "LAYERS",
    "Activation", "ACTIVATIONS", "make_activation",
    "Loss", "LogitsLoss", "ClassLoss", "LOSSES", "make_loss",
    "Optimizer", "OPTIMIZERS", "make_optimizer", "Schedule", "SCHEDULES", "make_schedule",
    "Initializer", "INITIALIZERS", "make_initializer",
    "Network", "Equation", "Explanation",
    "InputError", "ConfigError", "RegistrationError", "ShapeError", "DataError", "CheckpointError",
    "set_threads", "threads",
]
