"""cnncli: configuration-driven CNN experiments on a from-scratch NumPy engine.

The Python API (imported lazily, so that ``import cnncli.nn`` stays pure NumPy):

* ``cnncli.load_config(path_or_dict, overrides=[...])`` -> a validated, resolved Config
* ``cnncli.build(config)`` -> ``network, loss, optimizer``
* ``cnncli.train(config, runs_dir="runs")`` -> a Run (folder path, history, best epoch)
* ``cnncli.evaluate_run(run_dir)`` and ``cnncli.predict(run_dir, images)``
* ``cnncli.find_lr(config)`` -> the learning-rate range test (``cnncli lr-find``)
* ``cnncli.write_report(run_or_sweep_dir)`` -> report.html (``cnncli report``)
* ``cnncli.export_run(run_dir, "onnx" | "npz")`` -> the exported files (``cnncli export``)
"""

__version__ = "0.1.0"

_LAZY = {
    "load_config": ("cnncli.config", "load_config"),
    "Config": ("cnncli.config", "Config"),
    "build": ("cnncli.builder", "build"),
    "train": ("cnncli.experiment", "train"),
    "evaluate_run": ("cnncli.experiment", "evaluate_run"),
    "predict": ("cnncli.experiment", "predict"),
    "find_lr": ("cnncli.lr_find", "find_lr"),
    "write_report": ("cnncli.report", "write_report"),
    "export_run": ("cnncli.export", "export_run"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'cnncli' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
