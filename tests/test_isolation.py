"""The engine imports numpy and the standard library only, and nothing of cnncli outside
cnncli.nn (ARCHITECTURE.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FORBIDDEN = ("typer", "rich", "yaml", "PIL", "matplotlib", "torch", "click", "pandas", "scipy")

SCRIPT = f"""
import json, sys
import cnncli.nn
from cnncli.nn import Network, make_loss, make_optimizer
Network([{{"type": "conv2d", "filters": 2, "kernel_size": 3, "activation": "relu"}},
         {{"type": "flatten"}}, {{"type": "dense", "units": 1, "activation": "sigmoid"}}]).build((5, 5, 1))
make_loss("binary_crossentropy"); make_optimizer("adam")
import cnncli.nn.gradcheck
forbidden = {FORBIDDEN!r}
loaded = sorted(m for m in sys.modules if m.split(".")[0] in forbidden)
app = sorted(m for m in sys.modules if m.startswith("cnncli.") and not m.startswith("cnncli.nn"))
print(json.dumps({{"loaded": loaded, "numpy": "numpy" in sys.modules, "app": app}}))
"""


def test_engine_imports_no_ui_or_io_libraries():
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=root, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["numpy"]
    assert result["loaded"] == [], f"cnncli.nn pulled in {result['loaded']}"
    assert result["app"] == [], f"cnncli.nn imported the application's {result['app']}"


def test_detector_sees_a_forbidden_import():
    """The check above can fail: the same script notices a module that is imported."""
    script = SCRIPT.replace("import cnncli.nn\n", "import cnncli.nn\nimport json.decoder as yaml\n"
                            "sys.modules['yaml'] = yaml\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["loaded"] == ["yaml"]
    script = SCRIPT.replace("import cnncli.nn\n", "import cnncli.nn\nimport cnncli.errors\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert json.loads(proc.stdout.strip().splitlines()[-1])["app"] == ["cnncli.errors"]
