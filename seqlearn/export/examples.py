"""The example inputs graphs are traced on and checked with: random token ids of
several batch sizes and lengths (:data:`EXAMPLE_LENGTHS`), prefix masks and characters.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..vocab import Vocab
from .graphs import Inputs


#: lengths of the example batches: the first is traced; the others differ in batch size
#: and length (one sentence, unsorted lengths, a length of 1)
EXAMPLE_LENGTHS = ([4, 2], [7, 1, 5], [3])


def prefix_mask(lengths: Tensor, width: int) -> Tensor:
    """True on the first ``lengths[...]`` of ``width`` positions: ``(*lengths.shape, width)``."""
    return torch.arange(width) < lengths.unsqueeze(-1)


def random_ids(vocab: Vocab, shape: Sequence[int], gen: torch.Generator) -> Tensor:
    """Random ids of non-special tokens (of any token if the vocabulary has only specials)."""
    low = len(vocab.specials) if len(vocab) > len(vocab.specials) else 0
    return torch.randint(low, len(vocab), tuple(shape), generator=gen)


def random_sequences(vocab: Vocab, lengths: Sequence[Sequence[int]], seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    """``(ids (batch, max_len), lengths (batch,))`` batches of random tokens, one per list
    of lengths, padded with the pad index."""
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for lens in lengths:
        lens_t = torch.tensor(lens)
        padding = ~prefix_mask(lens_t, max(lens))
        batches.append((random_ids(vocab, (len(lens), max(lens)), gen).masked_fill(padding, vocab.pad_index), lens_t))
    return batches


def random_chars(vocab: Vocab, lengths: Tensor, width: int, seed: int) -> Tensor:
    """Random characters ``(batch, max_len, width)`` of words of 1 to ``width`` characters
    (the first word exactly ``width``), padding words all padding."""
    gen = torch.Generator().manual_seed(seed)
    shape = (len(lengths), int(lengths.max()))
    word_lengths = torch.randint(1, width + 1, shape, generator=gen).masked_fill(~prefix_mask(lengths, shape[1]), 0)
    word_lengths[0, 0] = width
    return random_ids(vocab, (*shape, width), gen).masked_fill(~prefix_mask(word_lengths, width), vocab.pad_index)


def tagger_examples(word_vocab: Vocab, char_vocab: Vocab | None) -> list[Inputs]:
    """``(word_ids, lengths[, char_ids])`` of random sentences, the char ids (with a
    ``char_vocab``) of another word width in each example."""
    examples: list[Inputs] = []
    for k, (ids, lengths) in enumerate(random_sequences(word_vocab, EXAMPLE_LENGTHS)):
        chars = () if char_vocab is None else (random_chars(char_vocab, lengths, 3 + 2 * k, seed=k),)
        examples.append((ids, lengths, *chars))
    return examples


def random_emissions(num_tags: int) -> list[Inputs]:
    """``(emissions (batch, time, num_tags), mask (batch, time))`` of random scores, one per
    :data:`EXAMPLE_LENGTHS`."""
    gen = torch.Generator().manual_seed(0)
    return [(torch.randn(len(lens), max(lens), num_tags, generator=gen), prefix_mask(torch.tensor(lens), max(lens)))
            for lens in EXAMPLE_LENGTHS]

