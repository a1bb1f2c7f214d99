"""Data-quality expectations on chunks and embeddings, evaluated with Great Expectations.

Each function returns one ``QualityResult`` per expectation so any orchestrator (Dagster
asset checks here) can show which rule failed, on how many rows, and which rows.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aiplatform_dagster.rag.ingest.chunking import Chunk

UNIT_NORM_TOLERANCE = 1e-3
_MAX_EXAMPLES = 5


@dataclass(frozen=True)
class QualityResult:
    name: str
    success: bool
    description: str
    unexpected_count: int
    unexpected_examples: list[Any]


def validate_frame(
    frame: Any, expectations: dict[str, tuple[str, Any]], id_columns: list[str]
) -> list[QualityResult]:
    """Run named expectations against one pandas DataFrame in an ephemeral GX context.

    A failed expectation's description and examples name the offending rows by
    ``id_columns``, so a person can go from a red check to the document that caused it.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("aiplatform")
        .add_dataframe_asset("frame")
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    result_format = {"result_format": "SUMMARY", "unexpected_index_column_names": id_columns}
    results = []
    for name, (description, expectation) in expectations.items():
        outcome = batch.validate(expectation, result_format=result_format)
        details = outcome.result or {}
        unexpected = int(details.get("unexpected_count") or 0)
        rows = list(details.get("partial_unexpected_index_list") or [])[:_MAX_EXAMPLES]
        examples = [_describe_row(row, id_columns) for row in rows]
        if not outcome.success:
            description = _with_offenders(description, details, examples, unexpected)
        results.append(
            QualityResult(
                name=name,
                success=bool(outcome.success),
                description=description,
                unexpected_count=unexpected,
                unexpected_examples=examples,
            )
        )
    return results


def _describe_row(row: dict[str, Any], id_columns: list[str]) -> str:
    """'doc_id guide.md, position 3, chunk_id 1f0c...: token_count=364'."""
    where = ", ".join(f"{column} {row[column]}" for column in id_columns)
    values = [
        f"{column}={_show(value)}" for column, value in row.items() if column not in id_columns
    ]
    return f"{where}: {', '.join(values)}" if values else where


def _show(value: Any) -> str:
    """A checked value, short: a blank text shows as '', a norm to six digits."""
    if isinstance(value, str):
        return repr(value[:60])
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _with_offenders(
    description: str, details: dict[str, Any], examples: list[str], unexpected: int
) -> str:
    """The rule, then the rows that broke it (or the table-level value observed)."""
    if "observed_value" in details:
        return f"{description}; observed {details['observed_value']}"
    more = f" and {unexpected - len(examples)} more" if unexpected > len(examples) else ""
    return f"{description}; failing: {'; '.join(examples)}{more}"


def check_chunks(
    chunks: Sequence[Chunk], known_doc_ids: set[str], max_tokens: int
) -> list[QualityResult]:
    """Non-empty text, token length within the embedder's input, unique ids, known documents."""
    import great_expectations as gx
    import pandas as pd

    frame = pd.DataFrame(
        {
            "chunk_id": [c.chunk_id for c in chunks],
            "doc_id": [c.doc_id for c in chunks],
            "position": [c.position for c in chunks],
            "text": [c.text.strip() for c in chunks],
            "token_count": [c.token_count for c in chunks],
        }
    )
    expect = gx.expectations
    return validate_frame(
        frame,
        {
            "text_not_empty": (
                "every chunk has non-blank text",
                expect.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1),
            ),
            "token_count_within_bounds": (
                f"every chunk has 1..{max_tokens} tokens (the embedder's input)",
                expect.ExpectColumnValuesToBeBetween(
                    column="token_count", min_value=1, max_value=max_tokens
                ),
            ),
            "chunk_ids_unique": (
                "no two chunks share an id",
                expect.ExpectColumnValuesToBeUnique(column="chunk_id"),
            ),
            "documents_exist": (
                "every chunk's document is among the source documents",
                expect.ExpectColumnValuesToBeInSet(
                    column="doc_id", value_set=sorted(known_doc_ids)
                ),
            ),
        },
        id_columns=["doc_id", "position", "chunk_id"],
    )


def check_embeddings(
    chunk_ids: Sequence[str], vectors: np.ndarray, expected_rows: int, expected_dimension: int
) -> list[QualityResult]:
    """One vector per chunk, of the embedder's dimension, each of unit length."""
    import great_expectations as gx
    import pandas as pd

    norms = np.linalg.norm(vectors, axis=1) if vectors.size else np.zeros(len(chunk_ids))
    frame = pd.DataFrame(
        {
            "chunk_id": list(chunk_ids),
            "dimension": [vectors.shape[1]] * len(chunk_ids),
            "norm": norms.astype(float),
        }
    )
    expect = gx.expectations
    return validate_frame(
        frame,
        {
            "row_count_matches_chunks": (
                f"exactly {expected_rows} vectors, one per chunk",
                expect.ExpectTableRowCountToEqual(value=expected_rows),
            ),
            "dimension_matches_embedder": (
                f"every vector has {expected_dimension} dimensions",
                expect.ExpectColumnValuesToBeInSet(
                    column="dimension", value_set=[expected_dimension]
                ),
            ),
            "unit_norm": (
                f"every vector has length 1 ± {UNIT_NORM_TOLERANCE}",
                expect.ExpectColumnValuesToBeBetween(
                    column="norm",
                    min_value=1 - UNIT_NORM_TOLERANCE,
                    max_value=1 + UNIT_NORM_TOLERANCE,
                ),
            ),
        },
        id_columns=["chunk_id"],
    )
