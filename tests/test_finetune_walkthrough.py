"""Issue 14's walk, as the README prints it: train the paper's network, extend it with a
lower rate, fine-tune a copy on three Caltech-101 classes with the conv layers frozen
(the README's own YAML), export it, and run the README's onnxruntime script.

Caltech-101 comes from a local mirror (127.0.0.1) serving a small archive made here:
three classes of 24x24 images whose colours tell them apart, so a few epochs learn them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cnncli import runs
from cnncli.data import datasets
from tests.helpers import assert_ok, invoke
from tests.test_datasets import Mirror

ROOT = Path(__file__).resolve().parents[1]
TINTS = {"Motorbikes": (200, 40, 40), "airplanes": (40, 60, 210), "Faces": (60, 190, 70)}


def caltech_archive(per_class: int) -> bytes:
    """caltech-101.zip as published, with three classes of noisy tinted images."""
    rng = np.random.default_rng(0)
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w:gz") as tar:
        for cls, tint in TINTS.items():
            for i in range(per_class):
                pixels = np.clip(np.array(tint) + rng.normal(0, 40, (24, 24, 3)), 0, 255).astype(np.uint8)
                img = io.BytesIO()
                Image.fromarray(pixels).save(img, "PNG")
                info = tarfile.TarInfo(f"101_ObjectCategories/{cls}/image_{i + 1:04d}.jpg")
                info.size = len(img.getvalue())
                tar.addfile(info, io.BytesIO(img.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("caltech-101/101_ObjectCategories.tar.gz", tar_bytes.getvalue())
        zf.writestr("caltech-101/Annotations.tar", b"")
    return out.getvalue()


def readme_block(heading: str, language: str, index: int = 0) -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading):]
    section = section[:section.index("\n## ", 1)] if "\n## " in section[1:] else section
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)[index]


@pytest.fixture
def caltech_mirror(tmp_path, monkeypatch):
    archive = caltech_archive(40)
    real = datasets.DATASETS["caltech101"]
    remote = (dataclasses.replace(real.files[0], md5=hashlib.md5(archive).hexdigest()),)
    monkeypatch.setitem(datasets.DATASETS, "caltech101", dataclasses.replace(real, files=remote, counts={}))
    (tmp_path / "mirror" / "caltech101").mkdir(parents=True)
    (tmp_path / "mirror" / "caltech101" / "caltech-101.zip").write_bytes(archive)
    with Mirror(tmp_path / "mirror") as mirror:
        monkeypatch.setenv("CNNCLI_DATA_MIRROR", mirror.url)
        yield


@pytest.mark.slow
def test_train_extend_and_fine_tune_with_frozen_convs_as_the_readme_prints_it(tmp_path, monkeypatch, caltech_mirror):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "paper.yaml").write_text((ROOT / "configs" / "paper.yaml").read_text())
    # The README's commands, with fewer epochs (the README's 10 and 20 become 2 and 4).
    commands = readme_block("## Continuing, fine-tuning and freezing", "bash").strip().splitlines()
    assert commands[0].startswith("cnncli train configs/paper.yaml --name paper --set train.epochs=10")
    assert_ok(invoke("train", "configs/paper.yaml", "--name", "paper", "--set", "train.epochs=2", "-q"))
    (paper,) = Path("runs").glob("*-paper")
    assert "--set train.epochs=20 --set optimizer.lr=0.00005" in commands[1]
    res = invoke("train", "--resume", paper, "--set", "train.epochs=4", "--set", "optimizer.lr=0.00005", "-q")
    assert_ok(res)
    assert "new trajectory" in res.stderr
    assert [m["lr"] for m in runs.read_metrics(paper)] == [0.0001, 0.0001, 0.00005, 0.00005]
    # The README's three-class config, fine-tuned from the paper run with the convs frozen.
    Path("my_three_classes.yaml").write_text(readme_block("## Continuing, fine-tuning and freezing", "yaml"))
    res = invoke("train", "my_three_classes.yaml", "--init-from", f"{paper}:best", "--set", "train.epochs=3")
    assert_ok(res)
    assert re.search(r"0 .*conv2d \(tanh\) .*loaded", res.stdout) and re.search(r"6 .*dense \(softmax\) .*initialized",
                                                                              res.stdout)
    assert "conv2d (tanh), frozen" in res.stdout and "non-trainable 209,792 (frozen)" in " ".join(res.stdout.split())
    (tuned,) = Path("runs").glob("*-three_classes")
    params, _, _ = runs.load_checkpoint(tuned / "checkpoints" / "last.npz")
    source, _, _ = runs.load_checkpoint(paper / "checkpoints" / "best.npz")
    assert all(np.array_equal(params[k], source[k]) for k in ("layers.0.kernel", "layers.2.kernel"))
    assert not np.array_equal(params["layers.5.kernel"], source["layers.5.kernel"])
    assert yaml.safe_load((tuned / "config.yaml").read_text())["init_from"]["loaded"] == [0, 2, 5]
    best = max(m["val_accuracy"] for m in runs.read_metrics(tuned))
    assert best > 0.8, runs.read_metrics(tuned)  # three tints, well above chance (1/3)
    # Export it, and run the README's five-line onnxruntime script: the classes of cnncli predict.
    pytest.importorskip("onnxruntime")
    assert_ok(invoke("export", tuned, "--include-preprocessing"))
    rng = np.random.default_rng(7)
    images = []
    for cls, tint in TINTS.items():
        path = tmp_path / f"new_{cls}.png"
        Image.fromarray(np.clip(np.array(tint) + rng.normal(0, 40, (30, 20, 3)), 0, 255).astype(np.uint8)).save(path)
        images.append(path)
    script = tmp_path / "predict.py"
    script.write_text(next(b for b in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
                           if "onnxruntime" in b))
    assert len(script.read_text().splitlines()) == 5
    import subprocess
    import sys

    printed = subprocess.run([sys.executable, str(script), str(tuned / "export" / "model.onnx"), *map(str, images)],
                             capture_output=True, text=True, check=True).stdout.split("\n")
    theirs = [line.split()[1] for line in printed if line.strip()]
    res = invoke("predict", tuned, *images, "--json")
    assert_ok(res)
    import json

    ours = [row["class"] for row in json.loads(res.stdout)]
    assert theirs == ours == list(TINTS), (theirs, ours)
