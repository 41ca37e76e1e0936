"""Words in every script (issue 15, part 3): split_words never cuts a
grapheme cluster, drops nothing but whitespace, and keeps numbers and
dotted abbreviations whole.

Before: ``\\w`` does not match combining marks, so ``"cafe\\u0301"`` gave
``["cafe", "\\u0301"]`` and the mark was lost downstream; Devanagari, Thai,
pointed Hebrew, vocalised Arabic and emoji sequences fell apart.
"""

from __future__ import annotations

import sys
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from txray.corpus import _CLUSTERING, _GRAPHEME_WORD, _WORD, split_words

CASES = {
    "decomposed Latin": ("cafe\u0301 na\u0131\u0308ve Zo\u0308e", ["cafe\u0301", "na\u0131\u0308ve", "Zo\u0308e"]),
    "precomposed Latin": ("café naïve", ["café", "naïve"]),
    "Devanagari": ("श्री राम ने कहा।", ["श्री", "राम", "ने", "कहा", "।"]),
    "Devanagari conjuncts": ("क्षत्रिय विद्यालय", ["क्षत्रिय", "विद्यालय"]),
    "Thai": ("สวัสดีครับ ผมชื่อ", ["สวัสดีครับ", "ผมชื่อ"]),
    "Arabic with harakat": ("مَرْحَبًا بِكُمْ!", ["مَرْحَبًا", "بِكُمْ", "!"]),
    "Hebrew with points": ("שָׁלוֹם עוֹלָם, בְּרֵאשִׁית", ["שָׁלוֹם", "עוֹלָם", ",", "בְּרֵאשִׁית"]),
    "CJK": ("你好，世界。東京は晴れ", ["你好", "，", "世界", "。", "東京は晴れ"]),
    "Hangul, precomposed and jamo": ("한국어 \u1112\u1161\u11ab", ["한국어", "\u1112\u1161\u11ab"]),
    "emoji ZWJ family": ("hi 👨\u200d👩\u200d👧!", ["hi", "👨\u200d👩\u200d👧", "!"]),
    "emoji skin tone, flag, keycap": ("👍🏽 🇫🇷 1\ufe0f\u20e3 ❤\ufe0f", ["👍🏽", "🇫🇷", "1\ufe0f\u20e3", "❤\ufe0f"]),
    "Persian ZWNJ": ("می\u200cخواهم", ["می\u200cخواهم"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_scripts_keep_their_clusters(name):
    text, words = CASES[name]
    assert split_words(text) == words
    assert "".join(split_words(text)) == "".join(text.split())


def test_the_reproducers_of_the_issue():
    assert split_words("cafe\u0301") == ["cafe\u0301"]
    assert split_words("श्री") == ["श्री"]
    assert len(split_words("👨\u200d👩\u200d👧\u200d👦")) == 1


@pytest.mark.parametrize(
    "text, words",
    [
        (
            "It costs $3.20, about 5.5% of 1,000.",
            ["It", "costs", "$3.20", ",", "about", "5.5", "%", "of", "1,000", "."],
        ),
        ("the U.S. and the U.K., e.g. here", ["the", "U.S.", "and", "the", "U.K.", ",", "e.g.", "here"]),
        ("€5 and £1,50 and ¥300", ["€5", "and", "£1,50", "and", "¥300"]),
        ("in 2010.The end.", ["in", "2010", ".", "The", "end", "."]),
        ("3.14159 and 1.5-2.5", ["3.14159", "and", "1.5-2.5"]),
        ("U.S.Army x.y", ["U", ".", "S", ".", "Army", "x", ".", "y"]),
        ("It's well-known, isn't it?", ["It's", "well-known", ",", "isn't", "it", "?"]),
        ("१२.५ रुपये", ["१२.५", "रुपये"]),  # Devanagari digits, with marks elsewhere in the text
    ],
)
def test_numbers_and_abbreviations_stay_whole(text, words):
    assert split_words(text) == words


def test_fast_and_grapheme_patterns_agree_on_every_kind_of_character():
    """Text without cluster-joining characters takes the fast re pattern;
    on such text it must give what the grapheme pattern gives. Checked for
    every assigned character below U+3000 and, above, for both ends of every
    run of one general category and every 31st character."""
    cat = ["x"] + [unicodedata.category(chr(c)) for c in range(sys.maxunicode + 1)] + ["x"]
    chars = [
        chr(c)
        for c in range(sys.maxunicode + 1)
        if cat[c + 1] not in ("Cn", "Cs", "Co")
        and (c < 0x3000 or c % 31 == 0 or cat[c + 1] != cat[c] or cat[c + 1] != cat[c + 2])
        and not _CLUSTERING.search(chr(c))
    ]
    assert len(chars) > 10_000
    text = " ".join(f"a{c}b {c} 1{c}2 {c}.{c}. {c}5 ${c}5 5.{c} {c}.5 x{c}" for c in chars)
    fast, grapheme = _WORD.findall(text), _GRAPHEME_WORD.findall(text)
    if fast != grapheme:
        first = next(i for i, (x, y) in enumerate(zip(fast, grapheme)) if x != y)
        pytest.fail(f"fast {fast[first - 2 : first + 3]} vs grapheme {grapheme[first - 2 : first + 3]}")


TRICKY = "aZé5_.,'’-$€ \t\u0301\u0308\u093f\u094d\u0915\u0e31\u05b8\u064e\u200d\u200c\U0001f468\U0001f3fd\U0001f1eb\u1100\u1161\u11ab!?"


@given(st.text(alphabet=TRICKY, max_size=40))
def test_nothing_but_whitespace_is_dropped(text):
    words = split_words(text)
    assert "".join(words) == "".join(text.split())
    assert all(w and not w.isspace() for w in words)


def test_the_cluster_detector_finds_exactly_the_joining_characters():
    """_CLUSTERING skips characters below U+0300 before testing properties."""
    import regex

    from txray.corpus import _CLUSTERING_PROPERTIES

    every = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c < 0xE000)
    found = _CLUSTERING.findall(every)
    assert found == regex.findall(_CLUSTERING_PROPERTIES, every)
    assert len(found) > 3000 and min(found) == "\u0300"
