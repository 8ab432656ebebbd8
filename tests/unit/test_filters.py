"""The quality filters (pipeline/filters.py) on junk built to fail each one, on prose that must pass,
and through prepare_document with the presets as `python -m pipeline filters=...` composes them.
What they remove on the real sample and test corpora: tests/integration/test_filters_on_sample.py."""

import pytest

from conftest import compose_pipeline_config
from cyrillic_prose import BULGARIAN, RUSSIAN
from pipeline import filters as F
from pipeline.config import CleaningConfig, FiltersConfig
from pipeline.documents import prepare_document
from pipeline.records import RawDocument, RejectAction, RejectReason, SourceFormat

# Ordinary English prose (written for the tests): 90 words in 4 sentences, one paragraph.
PROSE = (
    "The library on the corner of our street opened again last spring after a long renovation. "
    "Its reading room now has tall windows that face the park, and in the afternoon the light "
    "falls across the old oak tables where students sit with their notes. The librarian, a "
    "patient woman who has worked there for thirty years, still knows most visitors by name. "
    "On Saturdays she reads stories to the children of the neighbourhood, and the room fills "
    "with parents who pretend not to listen while they browse the shelves."
)
CHINESE = (
    "北京是中华人民共和国的首都，也是全国的政治、文化和国际交往中心。这座城市有三千多年的建城史，"
    "保存着许多古老的宫殿、寺庙和园林。每年都有大量游客来到这里参观故宫、长城和天坛。"
)
THAI = (
    "ประเทศไทยมีประชากรประมาณเจ็ดสิบล้านคน กรุงเทพมหานครเป็นเมืองหลวงและเมืองที่ใหญ่ที่สุดของประเทศ "
    "อาหารไทยมีชื่อเสียงไปทั่วโลก นักท่องเที่ยวจำนวนมากเดินทางมาเที่ยวชายหาดและวัดเก่าแก่ทุกปี"
)

# --- junk, one page per filter ------------------------------------------------------------------

COOKIE_PAGE = "\n".join(
    [
        "Welcome to our online store for garden furniture.",
        "This website uses cookies to ensure you get the best experience on our website.",
        "By continuing to browse the site you accept the use of cookies. Read our Cookie Policy.",
        "Please enable JavaScript to view the comments powered by our partner.",
        "Privacy Policy | Terms of Use | All rights reserved.",
    ]
)
NUMBER_TABLE = "Year Revenue Cost Units\n" + "\n".join(
    f"{2000 + i} {1200 + 37 * i}.5 {800 + 29 * i}.25 {10_000 + 311 * i}" for i in range(20)
)
LINK_LIST = "\n".join(f"https://www.example.com/garden/furniture/item-{i}/details.html" for i in range(12))
REPEATED_LINES = "\n".join(
    ["Cheap garden chairs, free delivery today!"] * 8
    + ["Our chairs are made of solid teak.", "Order before noon and they ship the same day."]
)
SPAM_PHRASES = PROSE + " " + "best price guaranteed buy now " * 25
HASHTAGS = " ".join(f"#{tag}" for tag in ["love", "cute", "fun", "art", "sun", "food", "cat", "dog"] * 8)
SERIAL_NUMBERS = "Parts: " + " ".join(f"SN{83726154 + 7919 * i}" for i in range(30))
SPACED_LETTERS = " ".join("the quick brown fox jumps over the lazy dog and runs into the woods".replace(" ", "")) * 2
MENU = "\n".join(
    [
        "Home",
        "About our company and its history",
        "Garden furniture for every season",
        "Tables and chairs made of teak",
        "Outdoor lighting and lanterns",
        "Cushions, covers and parasols",
        "Delivery and returns policy details",
        "Frequently asked questions about orders",
        "Contact our customer service team",
        "Find a showroom near your home",
        "Gift cards and seasonal offers",
        "Careers at our growing company",
    ]
)
LOREM = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " + PROSE


def raw(text: str, presplit: bool = False) -> RawDocument:
    return RawDocument("page.jsonl", "1", "", text, SourceFormat.JSON_LINES, presplit=presplit)


def preset(name: str, *overrides: str) -> FiltersConfig:
    """The filters exactly as `python -m pipeline filters=<name> <overrides>` composes them."""
    cfg, _ = compose_pipeline_config(["output_dir=/tmp/x", f"filters={name}", *overrides])
    return cfg.filters


@pytest.fixture(scope="module")
def default():
    return preset("default")


@pytest.fixture(scope="module")
def web():
    return preset("web")


def prepared(text: str, filters: FiltersConfig, **cleaning):
    """(document or None, rejections) of ``text`` under ``filters``."""
    return prepare_document(raw(text), CleaningConfig(**cleaning), filters)


def dropped_for(text: str, filters: FiltersConfig, **cleaning):
    doc, rejections = prepared(text, filters, **cleaning)
    assert doc is None, f"kept: {text[:60]!r}"
    assert rejections[-1].action == RejectAction.DROPPED
    return rejections[-1]


# --- the measures -------------------------------------------------------------------------------


def test_cjk_characters_are_words_and_other_words_split_at_whitespace():
    assert F.words_of("北京是首都。 Hello, world") == ["北", "京", "是", "首", "都", "。", "Hello,", "world"]


def test_word_length_is_not_measured_for_scripts_written_without_spaces():
    assert F.mean_word_length(F.words_of(CHINESE)) is None
    assert F.mean_word_length(F.words_of(THAI)) is None
    assert F.mean_word_length(F.words_of("ab abcd")) == 3.0


def test_terminal_punctuation_is_seen_behind_closing_quotes_and_in_other_scripts():
    ends = F.ends_in_terminal_punctuation
    assert ends('He said "we left."') and ends("北京是首都。") and ends("Это так?») ") and ends("यह सच है।")
    assert ends(THAI)  # Thai marks no sentence end
    assert not ends("Contact us") and not ends("The following groups:") and not ends("")


def test_a_page_said_twice_has_half_its_characters_in_repeated_ngrams_and_longer_ngrams_never_more():
    words = F.words_of(PROSE + " " + PROSE)
    assert F.duplicate_ngram_fraction(words, 5) == pytest.approx(0.5)
    mixed = F.words_of(PROSE + " the reading room now has tall windows that face the park and " + PROSE[:200])
    fractions = [F.duplicate_ngram_fraction(mixed, n) for n in range(5, 11)]
    assert fractions == sorted(fractions, reverse=True) and fractions[0] > 0.1
    assert F.duplicate_ngram_fraction(F.words_of(PROSE), 5) == 0.0


def test_the_most_frequent_ngram_counts_only_when_it_repeats():
    assert F.top_ngram_fraction(["a", "b", "c", "d"], 2) == 0.0
    # "ab cd" occurs 3 times: 12 of the 16 word characters ("ab cd ab cd ab cd xy zz").
    assert F.top_ngram_fraction(["ab", "cd", "ab", "cd", "ab", "cd", "xy", "zz"], 2) == pytest.approx(12 / 16)


def test_letters_digits_symbols_and_repeated_lines_are_measured_as_fractions():
    assert F.letter_word_fraction(["2019", "12.5", "Year", "Ünits"]) == 0.5
    assert F.digit_fraction("ab 12") == pytest.approx(0.5)
    assert F.symbol_word_ratio("#a #b c...", ["#a", "#b", "c..."]) == 1.0
    assert F.duplicate_line_fraction(["x", "y", "x", "x"]) == 0.5


# --- junk pages: each fails the filter built for it, with the value measured ---------------------


@pytest.mark.parametrize(
    "page,reason,detail",
    [
        (NUMBER_TABLE, RejectReason.FILTER_NO_LETTERS, "4.8% of words have a letter, minimum 80%"),
        (LINK_LIST, RejectReason.FILTER_WORD_LENGTH, "mean word length 60.2, allowed 3-10"),
        (SPACED_LETTERS, RejectReason.FILTER_WORD_LENGTH, "mean word length 1.0, allowed 3-10"),
        (REPEATED_LINES, RejectReason.FILTER_REPEATED_LINES, "70.0% of 10 lines repeat an earlier line, maximum 30%"),
        (
            SPAM_PHRASES,
            RejectReason.FILTER_REPEATED_NGRAMS,
            "the most frequent 2-gram covers 35.9% of the characters, maximum 20%",
        ),
        (HASHTAGS, RejectReason.FILTER_SYMBOLS, "1.000 hashes and ellipses per word, maximum 0.1"),
        (SERIAL_NUMBERS, RejectReason.FILTER_DIGITS, "78.4% of characters are digits, maximum 25%"),
    ],
)
def test_the_default_filters_drop_each_kind_of_junk_with_the_value_measured(default, page, reason, detail):
    r = dropped_for(page, default)
    assert r.reason == reason and detail in r.detail, r.detail


def test_web_text_filters_drop_menus_short_pages_notices_and_placeholders(default, web):
    menu = dropped_for(MENU, web)
    assert menu.reason == RejectReason.FILTER_TERMINAL_PUNCTUATION
    assert menu.detail == "0.0% of 12 lines end in terminal punctuation, minimum 12%"
    short = dropped_for(RUSSIAN[0], web)
    assert short.reason == RejectReason.FILTER_FEW_WORDS and short.detail == "48 words, minimum 50"
    cookies = dropped_for(COOKIE_PAGE, web)
    assert cookies.reason == RejectReason.FILTER_BOILERPLATE and "80.0% of the lines" in cookies.detail
    assert dropped_for(LOREM, web).detail == "lorem ipsum placeholder text"
    # The default preset does not look for notices nor count lines ending a sentence: all four kept.
    for page in (MENU, RUSSIAN[0], COOKIE_PAGE, LOREM):
        assert prepared(page, default)[0] is not None


def test_a_notice_line_is_removed_from_a_page_of_prose_which_is_kept(web):
    page = PROSE + "\nWe use cookies to improve your experience. Accept all cookies or manage your settings."
    doc, rejections = prepared(page, web)
    assert doc is not None and not any("cookies" in s for s in doc.sentences)
    assert [(r.reason, r.action) for r in rejections] == [
        (RejectReason.FILTER_BOILERPLATE_LINES, RejectAction.REPAIRED)
    ]
    assert rejections[0].detail.startswith("1 notice line(s) removed, first: 'We use cookies")
    # The same page without the notice gets the same id: the document is the prose alone.
    assert doc.doc_id == prepared(PROSE, web)[0].doc_id


def test_a_paragraph_of_prose_that_mentions_a_privacy_policy_is_not_a_notice():
    line = "In 2009 the company changed its privacy policy after " + "a long public debate about it " * 10
    assert not F.is_boilerplate_line(line)
    assert F.is_boilerplate_line("Privacy Policy | Terms of Use")


# --- prose passes -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["web", "default"])
def test_prose_in_any_script_passes(name):
    filters = preset(name, "filters.min_words=null")  # the test paragraphs are shorter than web's 50 words
    for text in [PROSE, *RUSSIAN, *BULGARIAN, CHINESE, THAI]:
        doc, rejections = prepared(text, filters, min_document_chars=50)
        assert doc is not None and not rejections, (text[:40], rejections)


def test_sentences_one_per_line_are_lines_of_the_document(web):
    """bert_lines input: each sentence is a line; sentences ending in a period all pass."""
    text = "\n".join(s.strip() + "." for s in PROSE.split(".") if s.strip())
    doc, rejections = prepare_document(raw(text, presplit=True), CleaningConfig(), web)
    assert doc is not None and len(doc.sentences) == 4 and not rejections


def test_no_filter_in_the_none_preset():
    none = preset("none")
    for page in (NUMBER_TABLE, LINK_LIST, REPEATED_LINES, SPAM_PHRASES, HASHTAGS, MENU, COOKIE_PAGE, LOREM):
        assert prepared(page, none)[0] is not None


def test_the_decision_is_the_same_on_every_call(default):
    """Deterministic: no randomness and no order dependence (a worker sees documents in any order)."""
    first = [F.quality_problem(p, default) for p in (SPAM_PHRASES, NUMBER_TABLE, PROSE)]
    assert first == [F.quality_problem(p, default) for p in (SPAM_PHRASES, NUMBER_TABLE, PROSE)]


# --- the config ---------------------------------------------------------------------------------


def test_the_job_runs_the_default_preset_and_its_values_are_the_dataclass_defaults():
    cfg, as_dict = compose_pipeline_config(["output_dir=/tmp/x"])
    assert cfg.filters == FiltersConfig()
    assert as_dict["filters"]["languages"] == [] and as_dict["filters"]["max_top_ngram_fraction"][2] == 0.2


@pytest.mark.parametrize(
    "override,message",
    [
        ("filters.max_digit_fraction=1.5", "filters.max_digit_fraction=1.5: must be a fraction in [0, 1]"),
        ("filters.max_top_ngram_fraction={2: 2.0}", "filters.max_top_ngram_fraction.2=2.0"),
        ("filters.min_mean_word_length=12", "min_mean_word_length=12.0 is above max_mean_word_length=10.0"),
        ("filters.languages=[english]", "filters.languages: ['english'] not known to the language model"),
    ],
)
def test_a_bad_threshold_fails_when_the_config_is_composed(override, message):
    with pytest.raises(Exception, match=message.replace("[", r"\[").replace("(", r"\(")):
        compose_pipeline_config(["output_dir=/tmp/x", override])
