"""The README's Python example runs and the Figure 2 network has the paper's size."""

import numpy as np

from cnncli.nn import Network, make_loss, make_optimizer


def test_readme_example_learns_a_little():
    net = Network([
        {"type": "conv2d", "filters": 64, "kernel_size": 5, "activation": "tanh"},
        {"type": "max_pool2d", "pool_size": 2},
        {"type": "conv2d", "filters": 128, "kernel_size": 5, "activation": "tanh"},
        {"type": "max_pool2d", "pool_size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 500, "activation": "tanh"},
        {"type": "dense", "units": 1, "activation": "sigmoid"},
    ]).build((28, 28, 3), seed=0)
    assert net.parameter_count() == 1_234_793
    loss = make_loss({"name": "binary_crossentropy", "reduction": "sum"})
    opt = make_optimizer({"name": "sgd", "lr": 1e-4})
    rng = np.random.default_rng(0)
    x = rng.random((32, 28, 28, 3), dtype=np.float32)
    y = rng.integers(0, 2, 32)
    values = [net.train_step(x, y, loss, opt)[0] for _ in range(3)]
    assert values[-1] < values[0]


def test_readme_python_api_block_runs_as_printed(tmp_path, monkeypatch):
    """The ```python block under "## Python API", run unchanged from a folder holding the
    shipped configs, as a reader of the README would run it."""
    import re
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    section = readme[readme.index("## Python API"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    shutil.copytree(root / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, "README.md (Python API)", "exec"), namespace)  # the README's own code, not config values
    run = namespace["run"]
    assert (run.path / "report.html").is_file() and namespace["page"] == run.path / "report.html"
    assert namespace["lr_test"].path.is_dir() and namespace["report"]["examples"] > 0
