"""An activation as a layer of its own: ``{type: activation, activation: relu}``, or the
activation's name as the type: ``{type: relu}`` (for every activation, plugins' too)."""

from __future__ import annotations

from cnncli.nn.activations import ACTIVATIONS
from cnncli.nn.describe import Equation, Explanation, batch_shape
from cnncli.nn.errors import ConfigError
from cnncli.nn.layers.base import LAYERS, ActivatedLayer
from cnncli.nn.registry import allowed_keys, register


@register("activation")
class ActivationLayer(ActivatedLayer):
    """An activation on its own: ``{type: activation, activation: relu}``."""

    check_output_shape = False

    def __init__(self, *, activation: object = "relu") -> None:
        super().__init__(activation)

    def forward_linear(self, x, training):
        return x

    def backward_linear(self, dz):
        return dz

    def config(self):
        return {"type": self.type_name, "activation": self.activation_config()}

    def label(self):
        return f"activation ({self.activation.name})"

    def forward_flops(self):
        return 0

    def linear_backward_flops(self, input_grad):
        return 0

    def explain(self, index, first):
        forward, backward, notes = self.activation.equations(batch_shape(self.output_shape))
        return Explanation(f"layers[{index}]: activation {self.activation.name}", notes=notes,
                           forward=[Equation(e.text.replace("a =", "y =", 1), e.tex, e.shape) for e in forward],
                           backward=backward)


def _add_shortcut(name, activation_class, origin) -> None:
    """``{type: <activation>}`` builds ``{type: activation, activation: <activation>}``."""

    def make(**kwargs):
        try:
            return ActivationLayer(activation={"name": name, **kwargs})
        except ConfigError as err:  # the user wrote {type: elu, alpha: ...}: name alpha, not activation.alpha
            raise err.at(err.path.removeprefix("activation.")) from None

    make.allowed_keys, make.required_keys = allowed_keys(activation_class)
    make.__doc__ = activation_class.__doc__
    LAYERS.add(name, make, origin)


ACTIVATIONS.on_add(_add_shortcut)
