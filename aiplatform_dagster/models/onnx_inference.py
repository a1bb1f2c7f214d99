"""ONNX inference on CPU for the query path: the query embedder and the reranker.

On CPU a query's encoder pass and the reranker's ten pairs are most of the query path's
compute. The float model is exported once with ``torch.onnx.export`` (dynamic batch and
sequence axes, eager attention) and onnxruntime's transformer optimizer fuses its attention and
layer norms. That fused float graph is the "onnx" path: the float model's arithmetic, in one
onnxruntime call instead of PyTorch's many small kernels (a served query's encoder pass holds
the interpreter far less). The "onnx-int8" path also quantises the MatMul and fused Attention
weights to int8 per channel with onnxruntime's dynamic quantisation. Each file is cached on
disk under a digest of the model folder, so every later process only loads it.

Why the fusion: the graph exported from transformers' SDPA attention is not recognised by
onnxruntime, and unfused attention ran 512-token reranker pairs slower than PyTorch (10 pairs:
onnxruntime float 1264 ms, int8 MatMul-only 1087 ms, PyTorch 1029 ms). Exported eagerly it fuses
into onnxruntime's Attention kernel, and int8 then runs them in 671 ms (1.53x PyTorch).

The graph holds the whole sentence-transformers pipeline (the transformer, the pooling its
folder configures, Normalize; for a cross-encoder, the activation ``predict`` applies), so
nothing of it is re-implemented here.

Only queries are encoded through ONNX: the index keeps the PyTorch model's vectors, so the ONNX
embedder carries the float model's identity. Serving uses either path only when a serving
release pins it, after ``evaluation/onnx_gate.py`` measured what it costs in nDCG@10.

onnxruntime and torch are imported on first use: Dagster imports this package in every process.
"""

import hashlib
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from aiplatform_dagster.errors import PlatformError
from aiplatform_dagster.models.embedders import (
    Embedder,
    Progress,
    SentenceTransformerEmbedder,
    encode_by_length,
    own_tokenizer,
)
from aiplatform_dagster.models.identity import folder_digest
from aiplatform_dagster.rag.index.atomic import write_atomically
from aiplatform_dagster.rag.query.rerank import CrossEncoderReranker, Interpolation

Inference = Literal["torch", "onnx", "onnx-int8"]
"""How the query encoder and reranker run: PyTorch, the fused float ONNX graph, or its int8 copy."""
TORCH: Inference = "torch"
ONNX: Inference = "onnx"
INT8: Inference = "onnx-int8"
OnnxInference = Literal["onnx", "onnx-int8"]
Kind = Literal["encoder", "cross-encoder"]
EXPORT_VERSION = 3
"""Part of every cache file's name: bump it when the export changes, so old files are not read."""
OPSET = 17
QUANTISED_OPS: dict[Kind, list[str]] = {
    "encoder": ["MatMul"],
    "cross-encoder": ["MatMul", "Attention"],
}
"""The fused Attention's projections are quantised for the reranker's 512-token pairs, where
they are much of the time (1.38x PyTorch with MatMul only, 1.53x with both); a query is a few
tokens, so the encoder keeps them float (same speed, query cosine min 0.991 against 0.988). A
graph where no attention fused has no Attention node, so only its MatMuls are quantised."""
_CONTENT_DIGEST_CHARS = 16


class OnnxInferenceError(PlatformError):
    """The ONNX path cannot serve this model; the message says why and what runs instead."""


def onnx_model(
    folder: str,
    kind: Kind,
    inference: OnnxInference,
    cache_dir: Path,
    load_float: Callable[[], Any],
) -> Path:
    """The cached ONNX file of the model in ``folder`` for ``inference`` (the fused float graph,
    or its int8 copy), exported, fused and quantised on a miss.

    Files are named ``{kind}-{inference}-{weights digest}-v{EXPORT_VERSION}-{content digest}.onnx``:
    a file whose bytes do not match its name (truncated, corrupt) is deleted and exported again.
    Concurrent exporters each write a scratch file and rename it into place, so a reader sees
    a complete file or none. ``load_float`` gives the float model, only called on a miss (a
    hit never loads torch).
    """
    cache_dir = Path(cache_dir)
    stem = f"{kind}-{inference}-{folder_digest(folder)[:16]}-v{EXPORT_VERSION}"
    for cached in sorted(cache_dir.glob(f"{stem}-*.onnx")):
        try:
            if _intact(str(cached), *_signature(cached)):
                return cached
        except FileNotFoundError:  # another process removed it as damaged meanwhile
            continue
        cached.unlink(missing_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=cache_dir) as scratch:
        model = load_float()
        exported = Path(scratch) / "float.onnx"
        _export(model, kind, exported)
        fused = Path(scratch) / "fused.onnx"
        graph = fused if fuse_attention(exported, fused, model.transformers_model) else exported
        if inference == INT8:
            quantised = Path(scratch) / "int8.onnx"
            _quantise(graph, quantised, QUANTISED_OPS[kind])
            graph = quantised
        return install(graph, cache_dir, stem)


def install(onnx_file: Path, cache_dir: Path, stem: str) -> Path:
    """Move ``onnx_file`` into the cache as ``{stem}-{content digest}.onnx``, atomically."""
    target = Path(cache_dir) / f"{stem}-{_content_digest(onnx_file)}.onnx"
    return write_atomically(target, lambda pending: os.replace(onnx_file, pending))


def _signature(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


@lru_cache(maxsize=64)
def _intact(path: str, inode: int, size: int, mtime_ns: int) -> bool:
    """Whether the file's bytes match the digest in its name; read once while it is unchanged."""
    return Path(path).stem.rsplit("-", 1)[-1] == _content_digest(Path(path))


def _content_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()[:_CONTENT_DIGEST_CHARS]


def _export(model: Any, kind: Kind, path: Path) -> None:
    """Trace the float model's whole pipeline into ONNX: token ids in, what the Python API
    returns out (a sentence embedding, or a cross-encoder's score after its activation)."""
    import torch

    if kind == "cross-encoder" and model.num_labels != 1:
        raise OnnxInferenceError(
            f"the cross-encoder has {model.num_labels} labels; a reranker needs one score per "
            "pair, so the int8 path exports single-label models only"
        )
    # Texts of two lengths: the trace keeps the branches this sample takes, and only a padded
    # batch makes transformers apply the attention mask (unpadded, it skips it).
    texts = ["an example query", "a longer example passage, so that the batch pads"]
    sample = dict(model.tokenizer(texts, padding=True, return_tensors="pt"))
    names = list(sample)
    output = "sentence_embedding" if kind == "encoder" else "scores"
    activation = model.activation_fn if kind == "cross-encoder" else torch.nn.Identity()

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            scores = activation(self.model(dict(zip(names, inputs, strict=True)))[output])
            return scores if kind == "encoder" else scores[:, 0]

    device = next(model.parameters()).device
    with _eager_attention(model.transformers_model), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on those fixed branches
        torch.onnx.export(
            Pipeline().eval(),
            tuple(sample[name].to(device) for name in names),
            str(path),
            input_names=names,
            output_names=[output],
            dynamic_axes={
                **{name: {0: "batch", 1: "sequence"} for name in names},
                output: {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )


@contextmanager
def _eager_attention(transformer: Any) -> Iterator[None]:
    """The model traced with eager attention, the pattern onnxruntime's optimizer fuses; the
    model's own setting (SDPA by default) is restored afterwards."""
    if transformer is None or not hasattr(transformer, "set_attn_implementation"):
        yield
        return
    previous = transformer.config._attn_implementation
    transformer.set_attn_implementation("eager")
    try:
        yield
    finally:
        transformer.set_attn_implementation(previous)


def fuse_attention(source: Path, target: Path, transformer: Any) -> bool:
    """Write ``source`` with its attention and layer norms fused by onnxruntime's BERT-family
    optimizer; False (nothing written) when no attention fused: that graph is quantised as it is."""
    from onnxruntime.transformers.optimizer import optimize_model

    config = getattr(transformer, "config", None)
    optimized = optimize_model(
        str(source),
        model_type="bert",
        num_heads=getattr(config, "num_attention_heads", 0),
        hidden_size=getattr(config, "hidden_size", 0),
    )
    if not optimized.get_fused_operator_statistics().get("Attention"):
        return False
    optimized.save_model_to_file(str(target))
    return True


def _quantise(source: Path, target: Path, op_types: list[str]) -> None:
    """int8 weights per output channel for ``op_types``; activations quantised at run time."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        per_channel=True,
        op_types_to_quantize=op_types,
        weight_type=QuantType.QInt8,
        # The optimizer's fused outputs carry no type; they are float.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


@lru_cache(maxsize=8)
def _session(path: str, yield_cpu: bool) -> Any:
    """One onnxruntime session per file, mode and process, on every core (files never change).

    ``yield_cpu``: the worker threads sleep between runs instead of spinning. Spinning wins a
    lone caller a few milliseconds, but in a server whose other threads (HTTP, search, the
    LLM client) need the same cores it burns them: 8 clients on 2 cores were served at 95
    queries/s spinning and 120 sleeping, with the float encoder.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if yield_cpu:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class _OnnxModel:
    """A cached ONNX file, its session and the model folder's own tokenizer."""

    def __init__(
        self,
        folder: str,
        kind: Kind,
        inference: OnnxInference,
        cache_dir: Path,
        load_float: Callable[[], Any],
        yield_cpu: bool = False,
    ) -> None:
        if inference not in (ONNX, INT8):
            raise OnnxInferenceError(f"{inference!r} is not an ONNX path: use {ONNX!r} or {INT8!r}")
        self._folder = folder
        self._kind = kind
        self._inference = inference
        self._cache_dir = Path(cache_dir)
        self._load_float = load_float
        self._yield_cpu = yield_cpu
        self._lock = threading.Lock()  # a fast tokenizer refuses concurrent padded calls

    @cached_property
    def path(self) -> Path:
        return onnx_model(
            self._folder, self._kind, self._inference, self._cache_dir, self._load_float
        )

    @cached_property
    def session(self) -> Any:
        return _session(str(self.path), self._yield_cpu)

    @cached_property
    def tokenizer(self) -> Any:
        return own_tokenizer(self._folder)

    def run(self, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int) -> Any:
        """The graph's output for ``texts`` (with ``pairs`` as second segments), tokenized as
        sentence-transformers does: padded to the longest, longest-first truncation."""
        with self._lock:
            encoded = self.tokenizer(
                list(texts),
                list(pairs) if pairs is not None else None,
                padding=True,
                truncation="longest_first",
                max_length=max_length,
                return_tensors="np",
            )
        feed = {i.name: encoded[i.name].astype(np.int64) for i in self.session.get_inputs()}
        return self.session.run(None, feed)[0]


class OnnxQueryEmbedder(SentenceTransformerEmbedder):
    """Encodes queries with the ONNX copy (float or int8) of a sentence-transformers model.

    Its ``model_id`` and weights folder are the float model's, so it reads the releases that
    model built (their vectors stay PyTorch's); only the query side runs through onnxruntime.
    """

    def __init__(
        self,
        model_path: str,
        cache_dir: Path,
        inference: OnnxInference = INT8,
        batch_size: int = 64,
        name: str | None = None,
        yield_cpu: bool = False,
    ) -> None:
        if not Path(model_path).is_dir():
            raise OnnxInferenceError(
                f"the {inference} query encoder needs the embedder's weights in a local folder, "
                f"and {model_path!r} is not one (a hub name?): the PyTorch model serves instead"
            )
        super().__init__(model_path, "cpu", batch_size, name)
        self._onnx = _OnnxModel(
            model_path, "encoder", inference, cache_dir, lambda: self.model, yield_cpu
        )

    @classmethod
    def of(
        cls,
        embedder: Embedder,
        cache_dir: Path,
        inference: OnnxInference = INT8,
        batch_size: int = 64,
        yield_cpu: bool = False,
    ) -> "OnnxQueryEmbedder":
        """The ONNX twin of a configured embedder; only local sentence-transformers models."""
        if not isinstance(embedder, SentenceTransformerEmbedder):
            raise OnnxInferenceError(
                f"the {inference} path exports local sentence-transformers models; the embedder "
                f"{embedder.model_id} runs elsewhere: the PyTorch path serves instead"
            )
        return cls(embedder.model_path, cache_dir, inference, batch_size, embedder.name, yield_cpu)

    @property
    def onnx_path(self) -> Path:
        """The cached ONNX file (exported on first use)."""
        return self._onnx.path

    @property
    def session(self) -> Any:
        """The onnxruntime session: its options and providers say how the encoder runs."""
        return self._onnx.session

    @property
    def dimension(self) -> int:
        return int(self._onnx.session.get_outputs()[0].shape[1])

    def encode(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        return encode_by_length(
            texts,
            lambda batch: self._onnx.run(batch, None, self.max_tokens + 2),
            self._batch_size,
            self.dimension,
            progress,
        )


class OnnxReranker(CrossEncoderReranker):
    """A cross-encoder reranker whose scores come from the ONNX copy (float or int8) of its
    model; the blend with the first-stage score is the folder's, as for the PyTorch reranker."""

    def __init__(
        self,
        model: str,
        cache_dir: Path,
        inference: OnnxInference = INT8,
        batch_size: int = 32,
        max_length: int = 512,
    ) -> None:
        if not Path(model).expanduser().is_dir():
            raise OnnxInferenceError(
                f"the {inference} reranker needs the cross-encoder in a local folder (a registry "
                f"version is downloaded to one), and {model!r} is not one: the PyTorch path "
                "serves instead"
            )
        super().__init__(str(Path(model).expanduser()), "cpu", batch_size, max_length)
        self._onnx = _OnnxModel(
            self._source, "cross-encoder", inference, cache_dir, lambda: self.model
        )

    @cached_property
    def interpolation(self) -> Interpolation:
        """Read from the folder without loading the float weights."""
        return Interpolation.load(Path(self._source))

    @property
    def onnx_path(self) -> Path:
        return self._onnx.path

    def scores(self, pairs: Sequence[tuple[str, str]]) -> Sequence[float]:
        scores: list[float] = []
        for start in range(0, len(pairs), self._batch_size):
            batch = pairs[start : start + self._batch_size]
            queries, passages = [q for q, _ in batch], [p for _, p in batch]
            scores.extend(self._onnx.run(queries, passages, self._max_length).tolist())
        return scores
