"""Padded tensors, batch dataclasses and the token-budget bucketing sampler."""
from __future__ import annotations

import gzip
import random

import pytest
import torch
from lightning_fabric.utilities.apply_func import move_data_to_device

from seqlearn.batching import (
    BucketBatchSampler,
    Padded,
    TaggingBatch,
    TranslationBatch,
    collate_tagging,
    collate_translation,
    pad,
    pad_nested,
)
from seqlearn.errors import ConfigError


def multi30k_like_lengths(n: int = 29000, seed: int = 0) -> list[int]:
    """Sentence lengths shaped like Multi30k's English side: mean about 13, from 2 to 40."""
    rng = random.Random(seed)
    return [min(40, max(2, round(rng.gammavariate(7.0, 13.0 / 7.0)))) for _ in range(n)]


def padding_share(batches: list[list[int]], lengths: list[int]) -> float:
    """Padding positions over all positions when each batch is padded to its longest member."""
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1 - sum(lengths[i] for b in batches for i in b) / padded


def random_batches_of_same_sizes(batches: list[list[int]], n: int, seed: int) -> list[list[int]]:
    """The same batch sizes filled with a random permutation of the examples."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    out, start = [], 0
    for b in batches:
        out.append(order[start : start + len(b)])
        start += len(b)
    return out


# -- padding ----------------------------------------------------------------------------
def test_pad_nested_matches_per_word_padding_and_masks_padding_words():
    sentences = [[[4, 5], [6]], [[7, 8, 9]], []]
    p = pad_nested(sentences, pad_index=0)
    assert p.ids.shape == (3, 2, 3) and p.lengths.tolist() == [[2, 1], [3, 0], [0, 0]]
    for i, sentence in enumerate(sentences):
        for j, word in enumerate(sentence):
            assert p.ids[i, j, : len(word)].tolist() == word
            assert p.ids[i, j, len(word) :].eq(0).all()
    assert p.mask.tolist()[0] == [[True, True, False], [True, False, False]]
    assert not p.mask[1, 1].any() and not p.mask[2].any()


def test_padded_mask_is_true_exactly_on_real_tokens():
    p = pad([[1, 2, 3], [4], [5, 6]], pad_index=9, min_len=5)
    assert p.ids.shape == (3, 5)
    assert p.mask.sum(1).tolist() == [3, 1, 2]
    assert p.ids[~p.mask].eq(9).all() and p.ids[p.mask].ne(9).all()


def test_collate_translation_keeps_index_and_pads_each_side():
    batch = collate_translation([(7, [5, 3], [2, 6, 7, 3]), (2, [8, 9, 10, 3], [2, 3])], src_pad=0, tgt_pad=1)
    assert batch.index.tolist() == [7, 2]
    assert batch.src.ids.tolist() == [[5, 3, 0, 0], [8, 9, 10, 3]]
    assert batch.tgt.ids.tolist() == [[2, 6, 7, 3], [2, 3, 1, 1]]
    assert batch.src.lengths.tolist() == [2, 4] and batch.tgt.lengths.tolist() == [4, 2]
    assert len(batch) == 2


def test_collate_tagging_aligns_words_tags_and_chars():
    items = [(0, [4, 5], [1, 2], [[3, 4, 5], [6]]), (1, [7], [2], [[8, 9]])]
    batch = collate_tagging(items, word_pad=0, tag_pad=0, char_pad=0)
    assert batch.words.ids.shape == batch.tags.ids.shape == (2, 2)
    assert torch.equal(batch.words.lengths, batch.tags.lengths)
    assert batch.chars.ids.shape == (2, 2, 3)
    assert batch.chars.lengths.tolist() == [[3, 1], [2, 0]]
    assert collate_tagging([(0, [4], [1], None)], 0, 0, 0).chars is None


def test_lightning_moves_batches_field_by_field():
    torch.manual_seed(0)
    batch = TaggingBatch(
        pad([[1, 2], [3]], 0), pad([[1, 1], [2]], 0), pad_nested([[[1], [2, 3]], [[4]]], 0), torch.tensor([0, 1])
    )
    moved = move_data_to_device(batch, torch.device("meta"))
    assert isinstance(moved, TaggingBatch) and isinstance(moved.chars, Padded)
    assert {t.device.type for t in (moved.words.ids, moved.tags.lengths, moved.chars.ids, moved.index)} == {"meta"}
    assert batch.words.ids.device.type == "cpu"  # the original is untouched
    tb = TranslationBatch(pad([[1]], 0), pad([[2, 3]], 0), torch.tensor([4])).to("meta")
    assert tb.src.ids.device.type == tb.tgt.lengths.device.type == tb.index.device.type == "meta"


# -- the sampler ------------------------------------------------------------------------
@pytest.mark.parametrize("bucket", [True, False])
@pytest.mark.parametrize("shuffle", [True, False])
def test_every_example_once_per_epoch_within_budget(bucket, shuffle):
    lengths = multi30k_like_lengths(3000, seed=1)
    sampler = BucketBatchSampler(lengths, max_tokens=300, max_sentences=16, bucket=bucket, shuffle=shuffle, seed=3)
    for _ in range(3):
        expected = len(sampler)
        batches = list(sampler)
        assert len(batches) == expected
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        assert all(len(b) * max(lengths[i] for i in b) <= 300 and len(b) <= 16 for b in batches)


def test_budget_counts_the_longer_side_of_pairs():
    pairs = [(random.Random(i).randint(1, 30), random.Random(-i).randint(1, 30)) for i in range(500)]
    batches = list(BucketBatchSampler(pairs, max_tokens=100, seed=0))
    assert sorted(i for b in batches for i in b) == list(range(500))
    assert all(len(b) * max(max(pairs[i]) for i in b) <= 100 for b in batches)


def test_an_example_over_budget_gets_a_batch_of_its_own():
    batches = list(BucketBatchSampler([3, 50, 4, 3], max_tokens=10, shuffle=False))
    assert [1] in batches and sorted(i for b in batches for i in b) == [0, 1, 2, 3]


def test_sentence_count_batching():
    batches = list(BucketBatchSampler([5] * 10, max_sentences=4, bucket=False, shuffle=False))
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_deterministic_per_seed_and_epoch_and_different_across_them():
    lengths = multi30k_like_lengths(2000, seed=2)

    def epoch(seed: int, e: int) -> list[list[int]]:
        sampler = BucketBatchSampler(lengths, max_tokens=256, seed=seed)
        sampler.set_epoch(e)
        return list(sampler)

    assert epoch(0, 0) == epoch(0, 0) and epoch(5, 2) == epoch(5, 2)
    assert epoch(0, 0) != epoch(1, 0)
    assert epoch(0, 0) != epoch(0, 1)
    # iterating advances the epoch (Lightning does not call set_epoch on a batch sampler)
    sampler = BucketBatchSampler(lengths, max_tokens=256, seed=0)
    assert [list(sampler), list(sampler)] == [epoch(0, 0), epoch(0, 1)]


def test_bucketed_batches_change_membership_between_epochs_but_not_sizes():
    lengths = multi30k_like_lengths(2000, seed=4)
    sampler = BucketBatchSampler(lengths, max_tokens=256, seed=0)
    first, second = list(sampler), list(sampler)
    assert sorted(map(len, first)) == sorted(map(len, second))
    assert {tuple(sorted(b)) for b in first} != {tuple(sorted(b)) for b in second}


def test_unshuffled_order_is_by_length():
    lengths = multi30k_like_lengths(500, seed=5)
    batches = list(BucketBatchSampler(lengths, max_tokens=128, shuffle=False))
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths)


def test_no_budget_is_a_config_error():
    with pytest.raises(ConfigError):
        BucketBatchSampler([1, 2, 3])
    with pytest.raises(ConfigError):
        BucketBatchSampler([1, 2, 3], max_tokens=0)


# -- padding on Multi30k-like data -----------------------------------------------------------
def assert_bucketing_beats_random_batching(lengths: list[int], max_tokens: int) -> None:
    bucketed = list(BucketBatchSampler(lengths, max_tokens=max_tokens, seed=0))
    assert padding_share(bucketed, lengths) < 0.10
    shuffled = random_batches_of_same_sizes(bucketed, len(lengths), seed=0)
    assert padding_share(shuffled, lengths) > 0.10


@pytest.mark.parametrize("max_tokens", [512, 1024, 4096])
def test_bucketing_keeps_padding_under_ten_percent_on_multi30k_like_lengths(max_tokens):
    lengths = multi30k_like_lengths()
    assert 12 < sum(lengths) / len(lengths) < 14 and min(lengths) == 2 and max(lengths) == 40
    assert_bucketing_beats_random_batching(lengths, max_tokens)


@pytest.mark.shared_data
def test_bucketing_keeps_padding_under_ten_percent_on_multi30k(shared_data):
    path = shared_data / "multi30k" / "train.en.gz"
    if not path.exists():
        pytest.skip(f"{path} not present")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lengths = [len(line.split()) + 1 for line in f]  # + </s>
    assert len(lengths) == 29000
    assert_bucketing_beats_random_batching(lengths, max_tokens=1024)
