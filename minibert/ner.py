"""NER plumbing: word labels <-> word-piece labels, and BIO tags -> entity spans (conlleval semantics)."""

from __future__ import annotations

from dataclasses import dataclass

IGNORE_INDEX = -100  # the label of word pieces that carry none (cross_entropy skips them)


def check_bio_labels(labels: list[str], task: str = "ner") -> None:
    for label in labels:
        if label != "O" and not (label[:2] in ("B-", "I-") and len(label) > 2):
            raise ValueError(f"task {task!r}: label {label!r} is not a BIO tag (O, B-TYPE or I-TYPE)")


def align_labels(word_ids: list[int | None], word_labels: list[int], label_all_pieces: bool = False,
                 inside_of: dict[int, int] | None = None) -> list[int]:
    """Word-level label ids -> one label per word piece.

    The first piece of a word carries the word's label; the others get IGNORE_INDEX, so each word
    counts once in the loss. With ``label_all_pieces`` every piece is labelled, and continuation
    pieces of a B-X word get I-X (``inside_of`` maps B-X ids to I-X ids).
    Special tokens and padding (word id None) are always ignored.
    """
    pieces, previous = [], None
    for w in word_ids:
        if w is None:
            pieces.append(IGNORE_INDEX)
        elif w != previous:
            pieces.append(word_labels[w])
        elif label_all_pieces:
            pieces.append((inside_of or {}).get(word_labels[w], word_labels[w]))
        else:
            pieces.append(IGNORE_INDEX)
        previous = w
    return pieces


def first_piece_index(word_ids: list[int | None], num_words: int) -> list[int | None]:
    """For each word, the position of its first piece (None if truncation cut the word off)."""
    first: list[int | None] = [None] * num_words
    for position, w in enumerate(word_ids):
        if w is not None and first[w] is None:
            first[w] = position
    return first


@dataclass
class Entity:
    type: str
    start: int  # first word
    end: int  # one past the last word, as in Python slices
    text: str

    def as_dict(self) -> dict:
        return {"type": self.type, "start": self.start, "end": self.end, "text": self.text}


def split_tag(tag: str) -> tuple[str, str]:
    return ("O", "") if tag == "O" else (tag[0], tag[2:])


def bio_to_entities(tags: list[str], words: list[str] | None = None) -> list[Entity]:
    """Entity spans from BIO tags, read the way conlleval reads them.

    An entity starts at B-X, and also at an I-X that follows O or a tag of another type (conlleval
    does not drop such a "stray" I-X; it opens a new entity). It ends before O, B-anything, or a
    tag of another type.
    """
    words = words if words is not None else [""] * len(tags)
    entities: list[Entity] = []
    start, current = None, ""
    for i, tag in enumerate([*tags, "O"]):  # the sentinel O closes a trailing entity
        prefix, kind = split_tag(tag)
        ends = start is not None and (prefix in ("O", "B") or kind != current)
        if ends:
            entities.append(Entity(current, start, i, " ".join(words[start:i])))
            start = None
        if prefix == "B" or (prefix == "I" and start is None):
            start, current = i, kind
    return entities
