"""Activation functions, one module each: the paper's Table 2 (Eqs. 10-21) and more.

Every module in this package is imported here and registers its class, so a new file
is a new activation; ``base.py`` holds the interface. ``cnncli components activation``
lists what is registered, plugins included, and each module's docstring gives its
equations.
"""

from cnncli.nn.activations.base import ACTIVATIONS, Activation, make_activation
from cnncli.nn.discover import import_submodules

import_submodules(__name__, __path__)

__all__ = ["ACTIVATIONS", "Activation", "make_activation"]
