"""Second-stage reranking with a cross-encoder.

First-stage retrieval scores query and chunk separately; a cross-encoder reads them together,
which ranks the top candidates far better at a cost that only a few dozen pairs can afford.
The model comes from a local folder, the Hugging Face hub/cache, or MLflow (so a reranker
fine-tuned and registered by the MLOps loop is served by its registry URI).

A model folder may hold ``interpolation.json`` (``{"first_stage_weight": w}``, written by the
training loop): the final score is then w * first-stage + (1 - w) * cross-encoder, each min-max
scaled over the candidates, so a cross-encoder trained on a small budget refines the fused
ranking instead of replacing it (w is chosen on held-out training queries).

A model that cannot be loaded raises ``RerankerError`` naming the model and the setting that
chose it, ``AIPLATFORM_RERANKER_MODEL``: a local folder is checked when the reranker is
built, an MLflow URI or hub name when its weights are first needed.
"""

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from aiplatform_dagster.errors import PlatformError
from aiplatform_dagster.rag.query.retriever import RetrievedChunk

MLFLOW_URI_PREFIXES = ("models:/", "runs:/", "mlflow-artifacts:/")
MODEL_VARIABLE = "AIPLATFORM_RERANKER_MODEL"
INTERPOLATION_FILE = "interpolation.json"
FIX = (
    f"Set {MODEL_VARIABLE} to a local CrossEncoder folder or an MLflow URI such as "
    "models:/reranker@champion, or unset it to search without reranking"
)


class RerankerError(PlatformError):
    """The configured reranker model cannot be loaded; the message names it and the fix."""


class Reranker(Protocol):
    """Reorders first-stage candidates; scores are the reranker's own, best first."""

    @property
    def model_id(self) -> str: ...

    def rerank(
        self, query: str, candidates: Sequence[RetrievedChunk], top_n: int
    ) -> list[RetrievedChunk]: ...


def is_mlflow_uri(model: str) -> bool:
    return model.startswith(MLFLOW_URI_PREFIXES)


@dataclass(frozen=True)
class Interpolation:
    """How much of the first-stage (fused) score the final score keeps; 0 = the model alone."""

    first_stage_weight: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.first_stage_weight <= 1.0:
            raise ValueError(
                f"first_stage_weight must be within 0..1, got {self.first_stage_weight}"
            )

    def save(self, folder: Path) -> None:
        """Write the setting beside the weights, so the model folder carries its own blend."""
        text = json.dumps({"first_stage_weight": self.first_stage_weight}, indent=2)
        (Path(folder) / INTERPOLATION_FILE).write_text(text + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> "Interpolation":
        """The folder's setting, or no interpolation when it has no ``interpolation.json``."""
        path = Path(folder) / INTERPOLATION_FILE
        if not path.is_file():
            return cls()
        try:
            return cls(float(json.loads(path.read_text(encoding="utf-8"))["first_stage_weight"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise RerankerError(
                f"{path} is not a valid interpolation setting ({exc}): it must be a JSON object "
                'like {"first_stage_weight": 0.4} with a weight within 0..1; fix or delete it '
                "(deleting it ranks by the cross-encoder alone)"
            ) from exc

    def blend(self, first_stage: Sequence[float], cross: Sequence[float]) -> list[float]:
        """Final scores; with weight 0 the cross-encoder's own scores, unscaled."""
        if self.first_stage_weight == 0.0:
            return [float(score) for score in cross]
        weight = self.first_stage_weight
        return [
            weight * first + (1.0 - weight) * model
            for first, model in zip(min_max(first_stage), min_max(cross), strict=True)
        ]


def min_max(scores: Sequence[float]) -> list[float]:
    """Scores scaled to 0..1 over the candidates (all 0 when they are equal)."""
    low, high = min(scores), max(scores)
    span = high - low
    return [(float(score) - low) / span if span > 0 else 0.0 for score in scores]


class CrossEncoderReranker:
    """A sentence-transformers CrossEncoder; weights load on the first ``rerank`` call.

    ``model`` is a local folder, a hub model name (served from the local cache unless
    HF_HUB_OFFLINE=0), or an MLflow URI: models:/name/version, models:/name@alias, runs:/...
    or mlflow-artifacts:/... holding a saved CrossEncoder folder, read from ``tracking_uri``
    (None: MLflow's own default, MLFLOW_TRACKING_URI).
    """

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        batch_size: int = 32,
        max_length: int = 512,
        tracking_uri: str | None = None,
    ) -> None:
        if not is_mlflow_uri(model):
            _check_local_model(model)
        self._source = model
        self._tracking_uri = tracking_uri
        self._device = device
        self._batch_size = batch_size
        self._max_length = max_length

    @property
    def model_id(self) -> str:
        return f"cross-encoder:{self._source}"

    @property
    def model(self) -> Any:
        """The sentence-transformers CrossEncoder (loaded on first use)."""
        return self._loaded[0]

    @property
    def interpolation(self) -> Interpolation:
        """The blend with the first-stage score that the model folder asks for."""
        return self._loaded[1]

    @cached_property
    def _loaded(self) -> tuple[Any, Interpolation]:
        if not is_mlflow_uri(self._source):
            return self._load(self._source)
        # The weights are read into memory, so the download can go once loading is done.
        with tempfile.TemporaryDirectory(prefix="reranker-") as download_dir:
            folder = _download_from_mlflow(self._source, Path(download_dir), self._tracking_uri)
            return self._load(str(folder))

    def _load(self, path_or_name: str) -> tuple[Any, Interpolation]:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import CrossEncoder

        folder = Path(path_or_name).expanduser()
        interpolation = Interpolation.load(folder) if folder.is_dir() else Interpolation()
        try:
            model = CrossEncoder(path_or_name, device=self._device, max_length=self._max_length)
        except OSError as exc:
            raise RerankerError(
                f"Could not load cross-encoder {self._source!r}: {str(exc).rstrip('.')}. "
                f"{FIX}; a hub model name only works once it is in the Hugging Face cache, or "
                "with HF_HUB_OFFLINE=0 where the hub is reachable."
            ) from exc
        return model, interpolation

    def scores(self, pairs: Sequence[tuple[str, str]]) -> Sequence[float]:
        """The cross-encoder's score of each (query, passage) pair, before any blend."""
        return self.model.predict(
            list(pairs),
            batch_size=self._batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
        )

    def rerank(
        self, query: str, candidates: Sequence[RetrievedChunk], top_n: int
    ) -> list[RetrievedChunk]:
        """The ``top_n`` candidates by final score (the cross-encoder's, blended with the
        first-stage score when the model folder says so); ties keep first-stage order."""
        if top_n < 1:
            raise ValueError(f"top_n must be at least 1, got {top_n}")
        if not candidates:
            return []
        pairs = [(query, candidate.chunk.indexed_text) for candidate in candidates]
        final = self.interpolation.blend(
            [candidate.score for candidate in candidates], self.scores(pairs)
        )
        rescored = [
            RetrievedChunk(candidate.chunk, score)
            for candidate, score in zip(candidates, final, strict=True)
        ]
        rescored.sort(key=lambda candidate: candidate.score, reverse=True)
        return rescored[:top_n]


def load_reranker(
    model: str | None, device: str = "cpu", tracking_uri: str | None = None
) -> Reranker | None:
    """The configured reranker, or None when no model is set (reranking is then skipped)."""
    if model is None or not model.strip():
        return None
    return CrossEncoderReranker(model.strip(), device=device, tracking_uri=tracking_uri)


def _looks_like_path(model: str) -> bool:
    """Hub names are "name" or "org/name"; anything else with a separator is a path."""
    return model.startswith(("/", ".", "~")) or "\\" in model or model.count("/") > 1


def _check_local_model(model: str) -> None:
    """Fail at configuration time, with the fix, for a folder that cannot be a cross-encoder."""
    path = Path(model).expanduser()
    if not path.exists():
        if _looks_like_path(model):
            raise RerankerError(f"Reranker model folder {path} does not exist. {FIX}.")
        return  # a hub model name
    if not (path / "config.json").is_file():
        raise RerankerError(
            f"Reranker model folder {path} has no config.json: set {MODEL_VARIABLE} to the "
            "folder that CrossEncoder.save_pretrained() wrote"
        )
    modules = path / "modules.json"
    if modules.is_file() and "Pooling" in modules.read_text(encoding="utf-8"):
        raise RerankerError(
            f"{path} holds an embedding (bi-encoder) model, not a cross-encoder: a reranker "
            "needs a model trained to score (query, passage) pairs, such as a fine-tuned "
            f"CrossEncoder or cross-encoder/ms-marco-MiniLM-L6-v2. {FIX}."
        )


def _download_from_mlflow(uri: str, destination: Path, tracking_uri: str | None) -> Path:
    """Download ``uri`` and return the folder inside it that holds the model's config.json."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=destination, tracking_uri=tracking_uri
            )
        )
    except MlflowException as exc:
        raise RerankerError(
            f"Could not download reranker {uri} from the MLflow tracking server "
            f"{tracking_uri or mlflow.get_tracking_uri()}: {exc.message}. Check "
            f"AIPLATFORM_MLFLOW_TRACKING_URI (or MLFLOW_TRACKING_URI), and that the run, model "
            f"version or alias that {MODEL_VARIABLE} names exists."
        ) from exc
    configs = sorted(
        local.rglob("config.json"), key=lambda config: (len(config.parts), str(config))
    )
    if not configs:
        raise RerankerError(
            f"MLflow artifact {uri} holds no model folder (no config.json): log the folder "
            "that CrossEncoder.save_pretrained() wrote, e.g. "
            "mlflow.log_artifacts(folder, 'reranker'), and set "
            f"{MODEL_VARIABLE}=runs:/<run_id>/reranker"
        )
    _check_local_model(str(configs[0].parent))
    return configs[0].parent
