"""Fixtures shared by the native-kernel tests."""
from __future__ import annotations

import pytest

from fggp_hub.inference import layers as layers_module


@pytest.fixture(params=[False, True], ids=["stores", "streaming-stores"])
def streaming(request, monkeypatch):
    """Also run every case with the non-temporal stores that outputs of >= 24 MiB get."""
    if request.param:
        monkeypatch.setattr(layers_module, "_STREAM_MIN_BYTES", 0)
    return request.param
