"""What makes two embedders the same: their weights and configuration, not where they live.

A retrained model saved over the old folder keeps its path but not its digest, so vectors
built by the old weights are never reused for it, and queries refuse a release it did not build.
"""

import hashlib
from functools import cache
from pathlib import Path

from aiplatform_dagster.models.embedders import Embedder

_SKIPPED_SUFFIXES = (".md", ".png", ".jpg", ".gitattributes")
_SKIPPED_FOLDERS = {"onnx", "openvino", ".git", ".cache"}
_BLOCK = 1 << 20


def embedder_identity(embedder: Embedder) -> str:
    """``model_id`` plus, for a local model, the digest of its weights and configuration."""
    folder = getattr(embedder, "model_path", None)
    if folder and Path(folder).is_dir():
        return f"{embedder.model_id}@sha256:{folder_digest(folder)[:16]}"
    return f"{embedder.model_id}@dim{embedder.dimension}"


def folder_digest(folder: str) -> str:
    """SHA-256 of a model folder's weights and configuration (what its identity digests)."""
    return _folder_digest(str(Path(folder).resolve()))


def _folder_digest(folder: str) -> str:
    files = sorted(
        path
        for path in Path(folder).rglob("*")
        if path.is_file()
        and not path.name.endswith(_SKIPPED_SUFFIXES)
        and not _SKIPPED_FOLDERS.intersection(path.relative_to(folder).parts[:-1])
    )
    signature = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _digest(folder, signature)


@cache
def _digest(folder: str, signature: tuple[tuple[str, int, int], ...]) -> str:
    """Hash of every file's relative name and bytes; cached while no file changes."""
    digest = hashlib.sha256()
    for name, _, _ in signature:
        path = Path(name)
        digest.update(str(path.relative_to(folder)).encode())
        with path.open("rb") as handle:
            while block := handle.read(_BLOCK):
                digest.update(block)
    return digest.hexdigest()
