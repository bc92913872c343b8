"""Word/piece label alignment and BIO -> entity spans with conlleval's reading."""

from __future__ import annotations

import pytest

from minibert.ner import IGNORE_INDEX as X
from minibert.ner import align_labels, bio_to_entities, check_bio_labels, first_piece_index


def spans(tags, words=None):
    return [(e.type, e.start, e.end) for e in bio_to_entities(tags, words)]


def test_align_labels_first_piece_only():
    # [CLS] Jo ##han ##son lives [SEP] [PAD]
    word_ids = [None, 0, 0, 0, 1, None, None]
    assert align_labels(word_ids, [1, 0]) == [X, 1, X, X, 0, X, X]


def test_align_labels_all_pieces_turns_b_into_i():
    word_ids = [None, 0, 0, 1, 1, None]
    inside_of = {1: 2}  # B-PER -> I-PER
    assert align_labels(word_ids, [1, 3], label_all_pieces=True, inside_of=inside_of) == [X, 1, 2, 3, 3, X]


def test_first_piece_index_marks_truncated_words():
    assert first_piece_index([None, 0, 0, 1, None], 3) == [1, 3, None]


def test_entities_from_clean_bio():
    words = ["Peter", "Blackburn", "visited", "New", "York", "for", "the", "EU"]
    tags = ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "O", "B-ORG"]
    entities = bio_to_entities(tags, words)
    assert [e.as_dict() for e in entities] == [
        {"type": "PER", "start": 0, "end": 2, "text": "Peter Blackburn"},
        {"type": "LOC", "start": 3, "end": 5, "text": "New York"},
        {"type": "ORG", "start": 7, "end": 8, "text": "EU"},  # an entity at the very end is closed
    ]


@pytest.mark.parametrize("tags,expected", [
    (["O", "I-PER", "I-PER", "O"], [("PER", 1, 3)]),  # a stray I- opens an entity, as conlleval does
    (["I-LOC"], [("LOC", 0, 1)]),  # even at the start of the sentence
    (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 3)]),  # a type change ends one, starts another
    (["B-PER", "B-PER", "I-PER"], [("PER", 0, 1), ("PER", 1, 3)]),  # B after B: two entities
    (["B-MISC", "O", "I-MISC"], [("MISC", 0, 1), ("MISC", 2, 3)]),
    (["O", "O"], []),
])
def test_entities_follow_conlleval(tags, expected):
    assert spans(tags) == expected


def test_bio_label_check():
    check_bio_labels(["O", "B-PER", "I-PER"])
    with pytest.raises(ValueError, match="'PER' is not a BIO tag"):
        check_bio_labels(["O", "PER"], "ner")
