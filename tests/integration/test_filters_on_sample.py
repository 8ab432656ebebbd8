"""What the quality and language filters remove on real text: the embedded English Wikipedia
sample (the job's default input), gensim's Lee news corpora, its movie-review sentences and
Bulgarian Wikipedia excerpt, and the Russian and Bulgarian test paragraphs. The default preset
removes none of it; the web preset removes short paragraphs (Gopher's 50 words) and one news
story cut off mid-sentence; ``filters.languages=[en]`` removes exactly the non-English documents.
Then the real job with ``filters=web filters.languages=[en]``: the rejects, the summary, the
report and the documents table say what was removed, why, and which language was kept."""

import json
import os
from collections import Counter

import pytest

from conftest import IN_MEMORY, compose_pipeline_config, run_job
from cyrillic_prose import BULGARIAN, RUSSIAN
from pipeline import report
from pipeline.config import CleaningConfig, SourceConfig
from pipeline.documents import prepare_document
from pipeline.records import RawDocument, SourceFormat
from pipeline.sources import read_source
from pipeline.stats import format_summary
from shards import read_split


def gensim_data(name: str) -> str:
    import gensim

    return os.path.join(os.path.dirname(gensim.__file__), "test", "test_data", name)


def read(path: str, **source) -> list[RawDocument]:
    cfg = SourceConfig(**source)
    return [r for r in read_source(path, lambda: open(path, "rb"), cfg) if isinstance(r, RawDocument)]


def stories(name: str) -> list[RawDocument]:
    """A Lee corpus file: one news story per line, read as the job reads its lines (lee.cor's line 41
    is not UTF-8, and the reader rejects it), one story a document."""
    (whole,) = read(gensim_data(name), text_format="bert_lines")
    return [
        RawDocument(name, str(i), "", line, SourceFormat.JSON_LINES) for i, line in enumerate(whole.text.split("\n"))
    ]


def paragraphs(name: str, texts: list[str]) -> list[RawDocument]:
    return [RawDocument(name, str(i), "", t, SourceFormat.BOOK_TEXT) for i, t in enumerate(texts)]


@pytest.fixture(scope="module")
def corpora(wiki_sample_path) -> dict[str, list[RawDocument]]:
    return {
        "enwiki sample": read(wiki_sample_path),  # 97 articles
        "lee.cor": stories("lee.cor"),  # 49 stories
        "lee_background.cor": stories("lee_background.cor"),  # 300 stories
        "pang_lee_polarity.cor": read(gensim_data("pang_lee_polarity.cor"), text_format="bert_lines"),
        "bgwiki": read(gensim_data("bgwiki-latest-pages-articles-shortened.xml.bz2")),  # 1 article
        "russian": paragraphs("russian", RUSSIAN),
        "bulgarian": paragraphs("bulgarian", BULGARIAN),
    }


def removed(corpora, *overrides) -> dict[str, dict[str, str]]:
    """{corpus: {record id: "reason: detail"}} of the documents the filters drop (too_short and the
    readers' rejects aside: they are the same with or without filters)."""
    filters = compose_pipeline_config(["output_dir=/tmp/x", *overrides])[0].filters
    out = {}
    for name, docs in corpora.items():
        for raw in docs:
            doc, rejections = prepare_document(raw, CleaningConfig(), filters)
            dropped = [r for r in rejections if r.reason.value.startswith("filter_") and r.action.value == "dropped"]
            if dropped:
                out.setdefault(name, {})[raw.record_id] = f"{dropped[-1].reason.value}: {dropped[-1].detail}"
    return out


def test_the_corpora_are_what_the_counts_below_are_about(corpora):
    sizes = {name: len(docs) for name, docs in corpora.items()}
    assert sizes == {
        "enwiki sample": 97,
        "lee.cor": 49,
        "lee_background.cor": 300,
        "pang_lee_polarity.cor": 1,
        "bgwiki": 1,
        "russian": 8,
        "bulgarian": 6,
    }


def test_the_default_filters_remove_nothing_from_real_text(corpora):
    assert removed(corpora) == {}


def test_the_web_filters_remove_short_paragraphs_and_a_story_cut_off_mid_sentence(corpora):
    """Gopher's 50 words: every Russian and Bulgarian test paragraph (40-48 words) and two 45-word
    news stories; FineWeb's lines ending a sentence: a one-line story that stops mid-sentence
    ("... were not fully representative of the Afghan people"). Nothing from Wikipedia."""
    web = removed(corpora, "filters=web")
    assert web["lee.cor"] == {"37": "filter_few_words: 45 words, minimum 50"}
    assert web["lee_background.cor"] == {
        "207": "filter_few_words: 45 words, minimum 50",
        "233": "filter_terminal_punctuation: 0.0% of 1 lines end in terminal punctuation, minimum 12%",
    }
    assert len(web["russian"]) == 8 and len(web["bulgarian"]) == 6
    assert {d.split(":")[0] for d in [*web["russian"].values(), *web["bulgarian"].values()]} == {"filter_few_words"}
    assert set(web) == {"lee.cor", "lee_background.cor", "russian", "bulgarian"}
    assert corpora["lee_background.cor"][233].text.endswith("representative of the Afghan people")


def test_english_only_removes_exactly_the_documents_in_other_languages(corpora):
    english = removed(corpora, "filters.languages=[en]")
    assert set(english) == {"bgwiki", "russian", "bulgarian"}
    assert len(english["russian"]) == 8 and len(english["bulgarian"]) == 6
    assert all(d.startswith("filter_language: identified as ru") for d in english["russian"].values())
    assert all(d.startswith("filter_language: identified as bg") for d in english["bulgarian"].values())
    assert list(english["bgwiki"].values())[0].startswith("filter_language: identified as bg (score 1.00)")
    # A Bulgarian corpus keeps its Bulgarian and loses the rest.
    bulgarian = removed(corpora, "filters.languages=[bg]")
    assert "bgwiki" not in bulgarian and "bulgarian" not in bulgarian
    assert len(bulgarian["enwiki sample"]) == 97 and len(bulgarian["russian"]) == 8


# --- the job ------------------------------------------------------------------------------------

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
LINK_LIST = "\n".join(f"https://www.example.com/garden/furniture/item-{i}/details.html" for i in range(60))


@pytest.fixture(scope="module")
def filtered_job(corpora, tmp_path_factory):
    """The job on the Lee stories, three junk pages, the Bulgarian excerpt and Crime and Punishment's
    opening (Russian), with the web filters and English only."""
    inputs = tmp_path_factory.mktemp("inputs")
    records = [{"id": f"lee-{r.record_id}", "text": r.text} for r in corpora["lee.cor"]]
    records += [
        {"id": name, "text": text}
        for name, text in [("cookies", COOKIE_PAGE), ("table", NUMBER_TABLE), ("links", LINK_LIST)]
    ]
    (inputs / "pages.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), "utf-8")
    for name in ("bgwiki-latest-pages-articles-shortened.xml.bz2", "crime-and-punishment.txt"):
        os.symlink(gensim_data(name), inputs / name)
    out = tmp_path_factory.mktemp("filtered")
    manifest = run_job(
        out,
        f"inputs=[{inputs}]",
        "filters=web",
        "filters.languages=[en]",
        "tokenizer.vocab_size=2000",
        "masking.dupe_factor=1",
        *IN_MEMORY,
    )
    return out, manifest


def test_the_job_rejects_each_filtered_document_with_its_reason_and_measure(filtered_job):
    out, manifest = filtered_job
    rejected = manifest.statistics["rejected"]
    assert {k: v for k, v in rejected.items() if k.startswith("filter_")} == {
        "filter_boilerplate": 1,  # the cookie page
        "filter_few_words": 1,  # lee story 37 (45 words)
        "filter_no_letters": 1,  # the table of numbers
        "filter_word_length": 1,  # the list of links
        "filter_language": 2,  # the Bulgarian article and the Russian novel
    }
    rejects = [json.loads(line) for f in sorted((out / "rejects").iterdir()) for line in f.read_text().splitlines()]
    by_id = {r["record_id"]: r for r in rejects if r["reason"].startswith("filter_")}
    assert by_id["links"]["detail"] == "mean word length 60.8, allowed 3-10"
    assert by_id["table"]["detail"] == "4.8% of words have a letter, minimum 80%"
    assert by_id["lee-37"]["detail"] == "45 words, minimum 50"
    assert by_id["cookies"]["detail"].startswith("80.0% of the lines are cookie, policy or JavaScript notices")
    languages = {r["source"].rsplit("/", 1)[-1]: r["detail"] for r in rejects if r["reason"] == "filter_language"}
    assert languages["crime-and-punishment.txt"].startswith("identified as ru")
    assert languages["bgwiki-latest-pages-articles-shortened.xml.bz2"].startswith("identified as bg")
    assert sum(manifest.statistics["documents_kept"].values()) == 48  # the 49 stories but one


def test_the_summary_and_the_report_count_rejects_by_filter(filtered_job):
    out, manifest = filtered_job
    summary = format_summary(manifest.statistics, 1.0, str(out))
    assert "filter_language 2" in summary and "filter_few_words 1" in summary
    counts, origin = report.rejects_by_reason(str(out), manifest)
    assert counts["filter_language"] == 2 and counts["filter_boilerplate"] == 1 and origin


def test_the_documents_table_records_each_kept_documents_language_and_score(filtered_job):
    out, _ = filtered_job
    docs = read_split(out, "documents").to_pydict()
    assert Counter(docs["language"]) == {"en": 48}
    assert min(docs["language_score"]) > 0.9
