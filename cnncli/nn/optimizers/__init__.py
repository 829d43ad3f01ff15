"""Optimizers, one module each: the paper's Tables 3-4 (corrected, see each module) and more.

Every module in this package is imported here and registers its class, so a new file is
a new optimizer; ``base.py`` holds the interface, clipping, weight decay and the
threaded update. Learning-rate schedules are in ``cnncli.nn.schedules``.
"""

from cnncli.nn.discover import import_submodules
from cnncli.nn.optimizers.base import OPTIMIZERS, Optimizer, make_optimizer
from cnncli.nn.schedules import SCHEDULES, Schedule, make_schedule

import_submodules(__name__, __path__)

__all__ = ["OPTIMIZERS", "Optimizer", "make_optimizer", "SCHEDULES", "Schedule", "make_schedule"]
