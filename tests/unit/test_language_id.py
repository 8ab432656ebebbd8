"""Language identification (pipeline/language.py): the model ships inside py3langid's wheel and
runs with no network; it names real paragraphs' languages with a high score and gives junk a low
one; ``filters.languages`` keeps the configured languages and records language and score."""

import os
import socket

import pytest

from conftest import compose_pipeline_config
from cyrillic_prose import BULGARIAN, RUSSIAN
from pipeline import language
from pipeline.config import CleaningConfig
from pipeline.documents import prepare_document
from pipeline.records import RawDocument, RejectReason, SourceFormat

ENGLISH = (
    "The library on the corner of our street opened again last spring after a long renovation. "
    "Its reading room now has tall windows that face the park, and in the afternoon the light "
    "falls across the old oak tables where students sit with their notes."
)
GERMAN = (
    "Die Bibliothek an der Ecke unserer Straße wurde im letzten Frühjahr nach einer langen Renovierung "
    "wieder eröffnet. Ihr Lesesaal hat jetzt hohe Fenster zum Park, und am Nachmittag fällt das Licht "
    "über die alten Eichentische, an denen Studenten mit ihren Notizen sitzen."
)
NUMBER_TABLE = "\n".join(f"{2000 + i} {1200 + 37 * i}.5 {800 + 29 * i}.25" for i in range(20))
LINK_LIST = "\n".join(f"https://www.example.com/garden/furniture/item-{i}/details.html" for i in range(12))


def languages(*codes: str, score: float | None = None):
    overrides = [f"filters.languages=[{','.join(codes)}]"]
    if score is not None:
        overrides.append(f"filters.min_language_score={score}")
    cfg, _ = compose_pipeline_config(["output_dir=/tmp/x", *overrides])
    return cfg.filters


def prepared(text: str, filters):
    return prepare_document(RawDocument("p.txt", "1", "", text, SourceFormat.BOOK_TEXT), CleaningConfig(), filters)


def test_the_model_is_a_file_inside_the_installed_package_and_loads_without_a_network(monkeypatch):
    import py3langid.langid

    model = os.path.join(os.path.dirname(py3langid.langid.__file__), py3langid.langid.MODEL_FILE)
    assert os.path.getsize(model) > 1_000_000

    def no_network(*args, **kwargs):
        raise OSError("network use during language identification")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    language._identifier.cache_clear()  # load the model afresh, offline
    assert language.identify_language(ENGLISH).language == "en"


@pytest.mark.parametrize(
    "text,code", [(ENGLISH, "en"), (GERMAN, "de"), *((t, "ru") for t in RUSSIAN), *((t, "bg") for t in BULGARIAN)]
)
def test_real_paragraphs_are_named_with_a_high_score(text, code):
    guess = language.identify_language(text)
    assert guess.language == code and guess.score > 0.9, guess


@pytest.mark.parametrize("junk", [NUMBER_TABLE, LINK_LIST, "Hello world.", "!!! ??? ... ### ***"])
def test_junk_and_scraps_get_a_score_below_the_default_threshold(junk):
    assert language.identify_language(junk).score < 0.5


def test_a_long_text_is_identified_from_its_start_middle_and_end():
    """A book whose front matter is in English and body in Russian is Russian."""
    text = ENGLISH * 3 + " " + " ".join(RUSSIAN * 12)
    sample = language.language_sample(text)
    assert len(sample) <= language.LANGUAGE_SAMPLE_CHARS + 2 and sample.startswith(ENGLISH[:50])
    assert sample.endswith(text[-100:])
    assert language.identify_language(text).language == "ru"
    assert language.language_sample(ENGLISH) == ENGLISH


def test_only_the_configured_languages_are_kept_and_the_rest_rejected_with_what_was_found():
    en = languages("en")
    doc, _ = prepared(ENGLISH, en)
    assert doc.language == "en" and doc.language_score > 0.9
    doc, rejections = prepared(RUSSIAN[0], en)
    assert doc is None and rejections[-1].reason == RejectReason.FILTER_LANGUAGE
    assert rejections[-1].detail.startswith("identified as ru (score 1.00); kept: en with score 0.5 or more")
    cyrillic = languages("ru", "bg")
    assert all(prepared(t, cyrillic)[0] is not None for t in RUSSIAN + BULGARIAN)
    assert prepared(ENGLISH, cyrillic)[0] is None


def test_the_score_threshold_applies_to_the_configured_language():
    scrap = ENGLISH[:120] + " " + GERMAN[:100]  # a scrap of two languages: a middling score
    guess = language.identify_language(scrap)
    assert guess.language in ("en", "de") and 0.1 < guess.score < 0.9, guess
    assert prepared(scrap, languages(guess.language, score=guess.score - 0.05))[0] is not None
    doc, rejections = prepared(scrap, languages(guess.language, score=guess.score + 0.05))
    assert doc is None and f"with score {guess.score + 0.05:g} or more" in rejections[-1].detail


def test_without_languages_nothing_is_identified():
    doc, _ = prepared(ENGLISH, compose_pipeline_config(["output_dir=/tmp/x"])[0].filters)
    assert doc.language == "" and doc.language_score is None


def test_the_codes_are_those_the_model_knows():
    assert {"en", "de", "ru", "bg", "zh", "ja"} <= set(language.known_languages())
    assert language.unknown_languages(["en", "xx", "eng"]) == ["xx", "eng"]
