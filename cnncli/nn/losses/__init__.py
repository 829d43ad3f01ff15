"""Losses, one module each: the paper's Table 1 (Eqs. 5-9) and more.

Every module in this package is imported here and registers its class, so a new file is
a new loss; ``base.py`` holds the interface, the reductions and the from-logits rules.
"""

from cnncli.nn.discover import import_submodules
from cnncli.nn.losses.base import LOSSES, ClassLoss, LogitsLoss, Loss, make_loss

import_submodules(__name__, __path__)

__all__ = ["LOSSES", "Loss", "LogitsLoss", "ClassLoss", "make_loss"]
