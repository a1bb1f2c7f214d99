"""One analyzer for documents and queries, so both sides of BM25 see the same terms.

Ordinary words are lower-cased, stop-word filtered and Snowball-stemmed, so "indexing" finds
"indexes". Compound tokens (IDs, dates, versions, codes: "AIP-4031", "2024-01-05", "v1.2.3",
"k8s") are also kept whole and unstemmed, because users search for them verbatim and stemming
or splitting alone would let "AIP-4030" match as well as "AIP-4031".
"""

import re
from functools import lru_cache

import Stemmer

# Bump when the output of `analyze` changes: a saved index built with another version is stale.
ANALYZER_VERSION = 1

# The NLTK English list; the one-letter and contraction stubs ("t", "don", "ll") are what the
# token pattern leaves of "don't" and "we'll", since an apostrophe is not a joiner.
_STOP_WORDS_TEXT = """
    a about above after again against ain all am an and any are aren as at be because been
    before being below between both but by can couldn d did didn do does doesn doing don down
    during each few for from further had hadn has hasn have haven having he her here hers herself
    him himself his how i if in into is isn it its itself just ll m ma me mightn more most mustn
    my myself needn no nor not now o of off on once only or other our ours ourselves out over own
    re s same shan she should shouldn so some such t than that the their theirs them themselves
    then there these they this those through to too under until up ve very was wasn we were weren
    what when where which while who whom why will with won wouldn y you your yours yourself
    yourselves
"""
STOP_WORDS: frozenset[str] = frozenset(_STOP_WORDS_TEXT.split())

# A run of word characters, optionally chained by joiners: "aip-4031", "v1.2.3", "10:30".
_TOKEN = re.compile(r"\w+(?:[-./:]\w+)*")
_JOINER = re.compile(r"[-./:_]")
_DIGIT = re.compile(r"\d")

_STEMMER = Stemmer.Stemmer("english")


def _word_terms(word: str) -> tuple[str, ...]:
    """Terms of a plain word: none for a stop word; Snowball only stems English (ASCII) words."""
    if word in STOP_WORDS:
        return ()
    return (_STEMMER.stemWord(word),) if word.isascii() else (word,)


@lru_cache(maxsize=1 << 18)
def _token_terms(token: str) -> tuple[str, ...]:
    """Terms of one lower-cased token; cached because corpora repeat tokens and stemming is slow."""
    if _JOINER.search(token) is None and _DIGIT.search(token) is None:
        return _word_terms(token)
    parts = (part for part in _JOINER.split(token) if part.isalpha())
    return (token, *(term for part in parts for term in _word_terms(part)))


def analyze(text: str) -> list[str]:
    """Split text into index terms: stemmed words plus exact compound tokens such as IDs."""
    return [term for token in _TOKEN.findall(text.lower()) for term in _token_terms(token)]
