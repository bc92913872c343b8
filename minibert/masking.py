"""BERT's masking rule: what the masked-language-model objective hides, and how.

Of the real tokens of a batch (never [CLS], [SEP], padding or any other special token), each is chosen for
prediction with probability 15%. A chosen token is

- replaced by [MASK] 80% of the time,
- replaced by a random token of the vocabulary 10% of the time (any token, special ones included, as BERT's
  create_pretraining_data.py and transformers' DataCollatorForLanguageModeling draw it),
- left as it is 10% of the time.

The model must predict the original token at every chosen position, whatever it now shows: the 10% random and
the 10% kept mean it cannot assume that only [MASK] positions matter, which would leave the representations of
ordinary tokens untrained (fine-tuning never shows it a [MASK]). Every other position's label is IGNORE_INDEX,
which the loss skips.

Whole-word masking (BERT's later checkpoints) chooses words instead of pieces: all the pieces of a chosen word
are predicted, so the model cannot fill ``##ing`` from the word's other, visible, pieces. As in Google's
create_pretraining_data.py, each piece of a chosen word then meets the 80/10/10 rule on its own, and words are
the pre-tokenizer's ("guitar." is two). transformers' collator (``whole_word_mask=True``) differs on both: it
puts [MASK] at every chosen piece and takes a word as a run of touching pieces.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100  # cross_entropy's ignore_index: the label of every position that is not predicted
MASK_PROBABILITY, MASK_SHARE, RANDOM_SHARE = 0.15, 0.8, 0.1


def mask_tokens(input_ids: torch.Tensor, maskable: torch.Tensor, mask_id: int, random_ids: torch.Tensor,
                generator: torch.Generator, probability: float = MASK_PROBABILITY,
                word_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(the masked input ids, the labels): ``maskable`` (B, L) is True at the tokens that may be chosen (real,
    not special); ``random_ids`` the ids a random replacement is drawn from (BERT's rule: the whole
    vocabulary). With ``word_ids`` (B, L; the word of each piece, -1 for none), words are chosen, not pieces.
    Draws come from ``generator`` alone, so the same generator state masks the same way."""
    if not 0.0 < probability < 1.0:
        raise ValueError(f"the masking probability must be in (0, 1), got {probability}")
    if word_ids is None:
        chosen = torch.rand(input_ids.shape, generator=generator) < probability
    else:  # one draw per word, shared by its pieces (word ids are per row, so rows draw separately)
        draws = torch.rand(input_ids.shape[0], int(word_ids.max()) + 2, generator=generator) < probability
        chosen = torch.gather(draws, 1, word_ids.clamp(min=-1) + 1) & (word_ids >= 0)
    chosen &= maskable
    labels = torch.where(chosen, input_ids, IGNORE_INDEX)
    # the chosen positions' fate: below 0.8 -> [MASK], 0.8 to 0.9 -> a random token, 0.9 and above -> unchanged
    fate = torch.rand(input_ids.shape, generator=generator)
    replaced = input_ids.clone()
    replaced[chosen & (fate < MASK_SHARE)] = mask_id
    randomised = chosen & (fate >= MASK_SHARE) & (fate < MASK_SHARE + RANDOM_SHARE)
    picks = torch.randint(len(random_ids), input_ids.shape, generator=generator)
    replaced[randomised] = random_ids[picks[randomised]]
    return replaced, labels
