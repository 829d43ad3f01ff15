"""Config -> engine objects, through the registries: the network, the loss, the optimizer.

(This module is ``builder``, not ``build``, so that ``cnncli.build(config)`` stays the
API function: a submodule named ``build`` would replace it as a package attribute.)
"""

from __future__ import annotations

from dataclasses import dataclass

from cnncli.config import Config, build_network, load_config, loss_keywords
from cnncli.errors import ConfigError
from cnncli.nn.losses import Loss, make_loss
from cnncli.nn.network import Network
from cnncli.nn.optimizers import Optimizer, make_optimizer


@dataclass
class Built:
    """What :func:`build` returns: unpacks as ``network, loss, optimizer``."""

    network: Network
    loss: Loss
    optimizer: Optimizer

    def __iter__(self):
        return iter((self.network, self.loss, self.optimizer))


def build(config: Config | dict | str) -> Built:
    """Network (built, seeded), loss and optimizer of a config (a Config, dict or YAML path)."""
    if not isinstance(config, Config):
        config = load_config(config)
    values = config.values
    try:
        network = build_network(values)
        loss = make_loss(loss_keywords(values["loss"]), "loss")
        optimizer = make_optimizer(values["optimizer"], "optimizer")
    except ConfigError as err:
        raise err.in_file(config.source) if config.source and not err.source else err
    return Built(network, loss, optimizer)


__all__ = ["Built", "build", "build_network"]
