"""Padded tensors and batches with explicit lengths and masks.

>>> p = pad([[5, 6, 7], [8]], pad_index=0)
>>> p.ids.tolist(), p.lengths.tolist()
([[5, 6, 7], [8, 0, 0]], [3, 1])
>>> p.mask.tolist()
[[True, True, True], [True, False, False]]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass
class Padded:
    """A batch of variable-length index sequences.

    ids: ``(batch, max_len)`` long, padded on the right with the vocabulary's pad index.
    lengths: ``(batch,)`` long, the true lengths.
    """

    ids: torch.Tensor
    lengths: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """``(batch, max_len)`` bool, True on real tokens."""
        return torch.arange(self.ids.size(1), device=self.ids.device)[None, :] < self.lengths[:, None]

    def __len__(self) -> int:
        return self.ids.size(0)

    def to(self, device: torch.device | str) -> "Padded":
        return Padded(self.ids.to(device), self.lengths.to(device))


def pad(sequences: Sequence[Sequence[int]], pad_index: int, min_len: int = 0) -> Padded:
    """Right-pad index lists into a :class:`Padded` (at least ``min_len`` columns)."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    width = max(int(lengths.max()) if len(sequences) else 0, min_len)
    ids = torch.full((len(sequences), width), pad_index, dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return Padded(ids, lengths)
