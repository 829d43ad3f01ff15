"""Small experiment configs shared by the CLI and config tests (plain dicts, as YAML gives)."""

TINY = {
    "name": "tiny",
    "seed": 0,
    "data": {"source": "synthetic", "num_samples": 200, "num_classes": 2, "noise": 0.05},
    "model": {
        "input_shape": [8, 8, 3],
        "layers": [
            {"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"},
            {"type": "max_pool2d", "pool_size": 2},
            {"type": "flatten"},
            {"type": "dense", "units": 2, "activation": "softmax"},
        ],
    },
    "optimizer": {"name": "adam", "lr": 0.01},
    "train": {"epochs": 2, "batch_size": 32},
}
