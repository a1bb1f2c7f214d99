"""The analyzer decides what a query can match, so these check matches a user would expect."""

from aiplatform_dagster.rag.index.text_analysis import STOP_WORDS, analyze


def test_words_are_lower_cased_and_stemmed_so_inflections_match():
    assert analyze("Indexing") == analyze("indexes") == analyze("INDEXED") == ["index"]
    assert analyze("Running retrievers") == analyze("run retriever")


def test_stop_words_are_dropped():
    assert analyze("The and OF it") == []
    assert analyze("what is the index") == analyze("index")
    assert {"the", "and", "is", "of"} <= STOP_WORDS


def test_ids_dates_versions_and_codes_are_kept_whole_and_unstemmed():
    for token in ("AIP-4031", "2024-01-05", "v1.2.3", "gpt-4o", "k8s", "10:30", "foo_bar"):
        assert token.lower() in analyze(f"see {token}, then"), token


def test_compound_tokens_also_yield_their_words():
    assert analyze("AIP-4031") == ["aip-4031", "aip"]
    assert analyze("Re-indexing") == ["re-indexing", "index"]


def test_a_stop_word_inside_a_compound_keeps_the_compound():
    assert analyze("state-of-the-art") == ["state-of-the-art", "state", "art"]


def test_trailing_punctuation_is_not_part_of_a_token():
    assert analyze("Deployed v1.2.3. Done.") == analyze("deployed v1.2.3 done")


def test_non_latin_text_is_lower_cased_not_mangled():
    assert analyze("Поиск ДОКУМЕНТОВ") == ["поиск", "документов"]
    assert analyze("東京の検索") == ["東京の検索"]
    assert analyze("Café naïve") == ["café", "naïve"]


def test_empty_and_punctuation_only_text_gives_no_terms():
    assert analyze("") == []
    assert analyze(" -- ... !?") == []
