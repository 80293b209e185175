"""Character-level word features for taggers: a char-CNN and a char-BiLSTM.

Both map a batch of character ids ``(batch, len, max_word_len)`` to one vector per word
``(batch, len, out_dim)``.  Character index ``padding_idx`` pads words to
``max_word_len``; a word of no characters (a padding word) gets the zero vector.
Padding never changes a word's features: the result for a word is the same whatever the
width it was padded to and whatever else is in the batch.

* :class:`CharCNN` (Ma & Hovy, 2016): a convolution over character embeddings, max-pooled
  over the word's characters.
* :class:`CharBiLSTM` (Lample et al., 2016): the final states of a bidirectional LSTM
  over the characters, forward and backward concatenated.

They are registered in :data:`seqlearn.registry.char_features` as ``"cnn"`` and
``"bilstm"``; :func:`build_char_features` builds one by name.  A plugin extractor takes
``(num_chars, char_dim=, out_dim=, padding_idx=)`` and maps ``(batch, len, max_word_len)``
character ids to ``(batch, len, out_dim)``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from . import registry
from .errors import ConfigError

__all__ = ["CharCNN", "CharBiLSTM", "build_char_features"]


def _per_word(
    chars: torch.Tensor, padding_idx: int, out_dim: int, encode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Run ``encode(char_ids (words, width), lengths (words,)) -> (words, out_dim)`` on the
    non-empty words of ``chars (batch, len, max_word_len)`` only, trimmed to their longest
    word, and scatter the result back to ``(batch, len, out_dim)`` with zeros elsewhere."""
    batch, length, _ = chars.shape
    flat = chars.reshape(batch * length, -1)
    lengths = (flat != padding_idx).sum(-1)
    rows = lengths.nonzero().squeeze(-1)
    if not rows.numel():
        return torch.zeros(batch, length, out_dim, device=chars.device)
    encoded = encode(flat[rows, : int(lengths.max())], lengths[rows])
    return encoded.new_zeros(batch * length, out_dim).index_copy(0, rows, encoded).view(batch, length, out_dim)


@registry.char_features.register("cnn")
class CharCNN(nn.Module):
    """Convolution over character embeddings, max-pooled over each word's characters.

    Character embeddings ``char_dim`` wide feed ``out_dim`` filters of width
    ``kernel_size`` (padding "same"; padding characters are zero vectors, exactly like the
    convolution's own zero padding, and are left out of the max).

    ``forward(chars (batch, len, max_word_len)) -> (batch, len, out_dim)``.
    """

    def __init__(self, num_chars: int, char_dim: int = 30, out_dim: int = 50, kernel_size: int = 3, padding_idx: int = 0):
        super().__init__()
        self.padding_idx = padding_idx
        self.out_dim = out_dim
        self.embedding = nn.Embedding(num_chars, char_dim, padding_idx=padding_idx)
        self.conv = nn.Conv1d(char_dim, out_dim, kernel_size, padding="same")

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        return _per_word(chars, self.padding_idx, self.out_dim, self._encode)

    def _encode(self, chars: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(words, width)`` -> ``(words, out_dim)``."""
        mask = chars != self.padding_idx  # (words, width)
        # zero the padding rows explicitly: the pad embedding may have been overwritten
        x = self.embedding(chars) * mask.unsqueeze(-1)
        h = self.conv(x.transpose(1, 2))  # (words, out_dim, width)
        return h.masked_fill(~mask.unsqueeze(1), float("-inf")).amax(-1)


@registry.char_features.register("bilstm")
class CharBiLSTM(nn.Module):
    """Bidirectional LSTM over character embeddings; a word's feature is the forward
    state after its last character concatenated with the backward state after its
    first, ``out_dim = 2 * hidden`` (so ``out_dim`` must be even).

    Words run as one packed sequence batch, so padding characters are never read.

    ``forward(chars (batch, len, max_word_len)) -> (batch, len, out_dim)``.
    """

    def __init__(self, num_chars: int, char_dim: int = 25, out_dim: int = 50, padding_idx: int = 0):
        super().__init__()
        if out_dim % 2:
            raise ConfigError(f"CharBiLSTM out_dim must be even (forward and backward halves), got {out_dim}")
        self.padding_idx = padding_idx
        self.out_dim = out_dim
        self.embedding = nn.Embedding(num_chars, char_dim, padding_idx=padding_idx)
        self.lstm = nn.LSTM(char_dim, out_dim // 2, batch_first=True, bidirectional=True)

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        return _per_word(chars, self.padding_idx, self.out_dim, self._encode)

    def _encode(self, chars: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(words, width)`` -> ``(words, out_dim)``."""
        packed = pack_padded_sequence(self.embedding(chars), lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)  # h: (2, words, out_dim // 2), in the words' original order
        return torch.cat([h[0], h[1]], dim=-1)


def build_char_features(name: str, num_chars: int, char_dim: int, out_dim: int, padding_idx: int = 0) -> nn.Module:
    """The extractor registered as ``name`` with these sizes (stamped with its provenance)."""
    return registry.char_features.build(name, num_chars, char_dim=char_dim, out_dim=out_dim, padding_idx=padding_idx)
