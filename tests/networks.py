"""Network configs shared by the engine tests."""


def figure2(classes=1, channels=3):
    """Figure 2 of the paper; ``classes`` > 1 ends in a softmax instead of one sigmoid."""
    last = ({"type": "dense", "units": 1, "activation": "sigmoid"} if classes == 1 else
            {"type": "dense", "units": classes, "activation": "softmax"})
    return [
        {"type": "conv2d", "filters": 64, "kernel_size": 5, "activation": "tanh"},
        {"type": "max_pool2d", "pool_size": 2},
        {"type": "conv2d", "filters": 128, "kernel_size": 5, "activation": "tanh"},
        {"type": "max_pool2d", "pool_size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 500, "activation": "tanh"},
        last,
    ]
