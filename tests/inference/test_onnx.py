"""ONNX export: ONNX Runtime logits equal torch's within 1e-4, dynamic batch, zeros exact, export/CLI routes."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import fggp_hub
from fggp_hub.inference import fold_batchnorms

from .test_sparse import _assert_same_logits, _input, _pruned

onnx = pytest.importorskip("onnx", reason="ONNX export needs the onnx package (pip install 'fggp-hub[dev]' or '[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="the round trip needs onnxruntime (pip install 'fggp-hub[dev]' or '[bench]')")
from onnx import numpy_helper  # noqa: E402


def _run(path, x: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


@pytest.mark.parametrize("name", ["fggp_resnet20_cifar", "small_vgg_cifar"])
def test_onnx_round_trip_dynamic_batch_and_exact_zeros(name, tmp_path):
    model = _pruned(name, 0.95, "global")
    path = fggp_hub.to_onnx(model, tmp_path / "m.onnx")
    graph = onnx.load(str(path)).graph
    assert not any(n.op_type == "BatchNormalization" for n in graph.node)  # folded
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    for batch in (1, 5):
        x = _input(name, batch)
        with torch.inference_mode():
            _assert_same_logits(model(x), _run(path, x))
    folded = copy.deepcopy(model)
    fold_batchnorms(folded)
    want = sorted(int((m.weight == 0).sum()) for m in folded.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    weights = [numpy_helper.to_array(t) for t in graph.initializer if len(t.dims) in (2, 4)]
    got = sorted(int((w == 0).sum()) for w in weights)
    assert got == want and sum(want) > 0


def test_onnx_fixed_batch_and_export_and_cli(tmp_path):
    model = _pruned("fggp_resnet20_cifar", 0.9, "global")
    fixed = fggp_hub.to_onnx(model, tmp_path / "fixed.onnx", batch_size=2)
    assert onnx.load(str(fixed)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    folder = fggp_hub.export(model, tmp_path / "repo", onnx=True)
    assert (folder / "model.onnx").is_file()
    loaded = fggp_hub.load(folder)  # the extra file is allowed in a repo folder
    x = _input("r", 3)
    with torch.inference_mode():
        _assert_same_logits(loaded(x), _run(folder / "model.onnx", x))

    from fggp_hub.cli import main

    out = tmp_path / "cli.onnx"
    assert main(["onnx", str(folder), str(out)]) == 0
    with torch.inference_mode():
        _assert_same_logits(model(x), _run(out, x))
    assert np.isfinite(_run(out, _input("r", 1)).numpy()).all()
