"""clean_text: Unicode normalisation, control characters, whitespace."""

from pipeline.cleaning import clean_text


def test_nfc_composes_combining_marks():
    assert clean_text("Cafe\u0301").text == "Café"


def test_nul_and_control_characters_removed_and_counted():
    cleaned = clean_text("a\x00b\x07c\x1bd\x7fe\x9f")
    assert cleaned.text == "abcde"
    assert cleaned.removed_control_chars == 5


def test_noncharacters_and_lone_surrogates_removed():
    cleaned = clean_text("a\ufffeb\uffffc\ud800d\udfffe")
    assert cleaned.text == "abcde"
    assert cleaned.removed_control_chars == 4


def test_replacement_character_kept():
    assert clean_text("bad \ufffd byte").text == "bad \ufffd byte"


def test_tabs_and_unicode_spaces_become_one_space():
    cleaned = clean_text("a\tb\u00a0\u00a0c\u2009d\u3000e")
    assert cleaned.text == "a b c d e"
    assert cleaned.removed_control_chars == 0


def test_zero_width_space_and_soft_hyphen_removed_but_joiners_kept():
    assert clean_text("co\u00adop\u200beration \ufeff").text == "cooperation"
    assert clean_text("\u0645\u200c\u06cc").text == "\u0645\u200c\u06cc"  # ZWNJ in Persian


def test_line_endings_normalised():
    assert clean_text("a\r\nb\rc\x0cd\u2028e").text == "a\nb\nc\nd\ne"
    assert clean_text("a\u2029b").text == "a\n\nb"


def test_trailing_spaces_stripped_and_single_newlines_kept():
    assert clean_text("  one  \ntwo   three \n").text == "one\ntwo three"


def test_blank_line_runs_become_one_paragraph_break():
    assert clean_text("p1\n\n\n\n \t \np2\n\n\np3").text == "p1\n\np2\n\np3"


def test_idempotent():
    once = clean_text("  x\x00 \u00a0y\r\n\r\n\r\nz\u0301 ").text
    assert clean_text(once).text == once
    assert clean_text(once).removed_control_chars == 0


def test_empty_and_whitespace_only():
    assert clean_text("").text == ""
    assert clean_text(" \n\t\n ").text == ""
