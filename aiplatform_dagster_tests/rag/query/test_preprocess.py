"""prepare_query must normalise any pasted text and spot what has to match verbatim."""

import pytest

from aiplatform_dagster.rag.query.preprocess import (
    QueryError,
    Script,
    names_term,
    prepare_query,
)


@pytest.mark.parametrize("raw", ["", "   ", "\n\t \u200b", "\x00\x07"])
def test_an_empty_query_is_rejected_with_a_clear_message(raw: str) -> None:
    with pytest.raises(QueryError, match="empty"):
        prepare_query(raw)


def test_query_error_is_a_value_error() -> None:
    assert issubclass(QueryError, ValueError)


def test_unicode_whitespace_and_control_characters_are_normalised() -> None:
    query = prepare_query("  Ｒｅｓｅｔ\u00a0the\tVPN\u200b token\x00 \n\n ﬁrst  ")

    assert query.text == "Reset the VPN token first"
    assert not query.truncated


def test_differently_typed_forms_of_one_query_share_one_text() -> None:
    forms = ["How do I reset my VPN?", "  How do\tI reset my VPN?\n", "Ｈｏｗ do I reset my VPN?"]

    assert len({prepare_query(form).text for form in forms}) == 1


def test_a_100_kb_query_is_truncated_at_a_word_boundary() -> None:
    raw = "retrieval " * 10_000 + "tail"

    query = prepare_query(raw, max_chars=2000)

    assert query.truncated
    assert len(query.text) <= 2000
    assert query.text.endswith("retrieval")
    assert raw.startswith(query.text)


def test_a_single_overlong_word_is_cut_hard() -> None:
    query = prepare_query("x" * 5000, max_chars=100)

    assert query.truncated
    assert query.text == "x" * 100


@pytest.mark.parametrize(
    ("raw", "phrases"),
    [
        ('error "connection pool exhausted" after deploy', ["connection pool exhausted"]),
        ("“rollback plan” and «plan B»", ["rollback plan", "plan B"]),
        ('a "lone quote', []),
    ],
)
def test_quoted_phrases_are_detected(raw: str, phrases: list[str]) -> None:
    assert prepare_query(raw).quoted_phrases == phrases


@pytest.mark.parametrize(
    ("raw", "terms"),
    [
        ("status of AIP-4031", ["AIP-4031"]),
        ("JIRA-123 and jira-124", ["JIRA-123", "jira-124"]),
        ("regression in commit 3fa9c2e1b", ["3fa9c2e1b"]),
        ("where is max_chunk_tokens set", ["max_chunk_tokens"]),
        ("RetrievedChunk vs getUser", ["RetrievedChunk", "getUser"]),
        ("errors in src/app/settings.py and config.yaml.", ["src/app/settings.py", "config.yaml"]),
        ("which runs use gpt-4o-mini", ["gpt-4o-mini"]),
    ],
)
def test_ids_codes_identifiers_and_file_names_are_exact_terms(raw: str, terms: list[str]) -> None:
    assert prepare_query(raw).exact_terms == terms


@pytest.mark.parametrize(
    ("raw", "terms"),
    [
        ("incidents on 2024-01-05", ["2024-01-05"]),
        ("deploys since 05/01/2024", ["05/01/2024"]),
        ("changes in v1.2.3 and 1.13.27", ["v1.2.3", "1.13.27"]),
        ("is v2.0.0-rc1 out?", ["v2.0.0-rc1"]),
    ],
)
def test_dates_and_versions_are_exact_terms(raw: str, terms: list[str]) -> None:
    assert prepare_query(raw).exact_terms == terms


def test_plain_language_has_no_exact_terms() -> None:
    query = prepare_query("What is the state-of-the-art way to deduplicate documents, e.g. PDFs?")

    assert query.exact_terms == []
    assert query.quoted_phrases == []


@pytest.mark.parametrize(
    ("raw", "script"),
    [
        ("how do I rotate keys", Script.LATIN),
        ("как настроить кэш для Redis", Script.CYRILLIC),
        ("如何重置我的VPN令牌", Script.CJK),
        ("パスワードをリセットする方法", Script.CJK),
        ("비밀번호 재설정 방법", Script.CJK),
        ("كيف أعيد تعيين كلمة المرور", Script.ARABIC),
        ("reset password пароль сервера", Script.MIXED),
        ("2024-01-05 42", Script.OTHER),
    ],
)
def test_script_is_detected(raw: str, script: Script) -> None:
    assert prepare_query(raw).script == script


def test_words_are_counted_and_unspaced_cjk_is_not_one_word() -> None:
    assert prepare_query("reset the VPN token , please").word_count == 5
    # 20 Han characters, no spaces: about ten words, not one.
    assert prepare_query("我想知道如何在公司的电脑上重置我的令牌").word_count == 10


@pytest.mark.parametrize(
    "text",
    [
        "Error AIP-403 is raised",
        "the scope is missing (aip-403).",
        "AIP-403: missing scope",
        "upgrade to v1.2.",
        "v1.2, then v1.3",
        "see errors/AIP-403 for details",
    ],
)
def test_a_passage_names_a_term_written_whole(text: str) -> None:
    term = "v1.2" if "v1.2" in text else "AIP-403"
    assert names_term(text, term)


@pytest.mark.parametrize(
    ("text", "term"),
    [
        ("Error AIP-4031 is raised", "AIP-403"),
        ("Error XAIP-403 is raised", "AIP-403"),
        ("Error AIP-403-B is raised", "AIP-403"),
        ("upgrade to v1.25", "v1.2"),
        ("upgrade to v1.2.3 now", "v1.2"),
        ("upgrade to v1.2-rc1 now", "v1.2"),
        ("run train_model_v2", "model_v2"),
    ],
)
def test_a_longer_term_does_not_name_the_shorter_one(text: str, term: str) -> None:
    assert not names_term(text, term)
