"""benchmarks/bench_chunks.py on the CPU: its settings parse as documented, and without CUDA it stops with a message
(it measures the CUDA formulations' chunks); the GPU run itself is in benchmarks/RESULTS.md."""

import argparse
import sys

import pytest
import torch

from benchmarks import bench_chunks
from sconv.functional import conv_sparse


def test_settings_parse_and_bad_ones_are_refused():
    assert bench_chunks.parse_setting("33554432:256") == (2**25, 256)
    for bad in ("2**25:256", "1024", "0:256", "1024:-1", "a:b"):
        with pytest.raises(argparse.ArgumentTypeError, match="ELEMENTS"):
            bench_chunks.parse_setting(bad)


def test_chunked_sets_and_restores_the_constants():
    shipped = conv_sparse.CHUNK_ELEMENTS, conv_sparse.MIN_CHUNK_LANES
    with bench_chunks.chunked((7, 3)):
        assert (conv_sparse.CHUNK_ELEMENTS, conv_sparse.MIN_CHUNK_LANES) == (7, 3)
    assert (conv_sparse.CHUNK_ELEMENTS, conv_sparse.MIN_CHUNK_LANES) == shipped


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_without_cuda_it_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench_chunks.py", "--out", str(tmp_path), "--settings", "1024:8"])
    with pytest.raises(SystemExit):
        bench_chunks.main()
    assert "GPU machine" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written
