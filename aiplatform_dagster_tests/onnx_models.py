"""The ONNX copies of the packaged MiniLM (float and int8), exported once per session, and a
deliberately broken int8 one.

Exporting and quantising takes seconds; every test that only needs the file copies it from here.
"""

from pathlib import Path

import numpy as np
import pytest

from aiplatform_dagster.models.embedders import packaged_minilm_path
from aiplatform_dagster.models.onnx_inference import ONNX, OnnxQueryEmbedder, install

INT8_COSINE_MEAN = 0.98
INT8_COSINE_MIN = 0.95
"""What the int8 MiniLM keeps of its float query vectors on any CPU: onnxruntime's int8 kernels
differ by instruction set, and the same file gave a minimum cosine of 0.986 on AVX-512 and 0.978
on AVX2 without VNNI, both at mean 0.992 (the broken copy below scores under 0.9)."""


@pytest.fixture(scope="session")
def int8_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding the int8 MiniLM (the test cross-encoder joins it on first use)."""
    cache = tmp_path_factory.mktemp("onnx-int8")
    assert OnnxQueryEmbedder(packaged_minilm_path(), cache).onnx_path.is_file()
    return cache


@pytest.fixture(scope="session")
def float_onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding the fused float MiniLM."""
    cache = tmp_path_factory.mktemp("onnx-float")
    assert OnnxQueryEmbedder(packaged_minilm_path(), cache, ONNX).onnx_path.is_file()
    return cache


@pytest.fixture(scope="session")
def broken_int8_cache(int8_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache whose int8 MiniLM has noise added to its token embeddings: a quantisation gone
    wrong, filed under the real model's digest so it loads as that model's int8 copy."""
    import onnx
    from onnx import numpy_helper

    good = OnnxQueryEmbedder(packaged_minilm_path(), int8_cache).onnx_path
    model = onnx.load(str(good))
    table = max(model.graph.initializer, key=lambda tensor: int(np.prod(tensor.dims)))
    weights = numpy_helper.to_array(table)
    noise = np.random.default_rng(0).normal(0.0, 2 * weights.std(), weights.shape)
    table.CopyFrom(numpy_helper.from_array((weights + noise).astype(weights.dtype), table.name))
    cache = tmp_path_factory.mktemp("onnx-int8-broken")
    scratch = cache / "broken.onnx"
    onnx.save(model, str(scratch))
    install(scratch, cache, good.stem.rsplit("-", 1)[0])
    return cache
