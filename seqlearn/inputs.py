"""What inference methods accept as sentences, checked and made into token lists.

:meth:`Seq2Seq.translate <seqlearn.seq2seq.Seq2Seq.translate>`,
:meth:`Tagger.predict <seqlearn.tagger.Tagger.predict>`,
:meth:`SequenceClassifier.predict <seqlearn.classifier.SequenceClassifier.predict>` and
:meth:`LanguageModel.generate <seqlearn.language_model.LanguageModel.generate>` /
``sample`` (prompts) take one sentence (a string) or a sequence of sentences, each a string (split by the model's tokenizer) or a token list
(used as given).  :func:`token_lists` turns that into token lists and promises:

* an empty or whitespace-only string is an empty token list -- whatever the tokenizer
  (NLTK's Toktok would make ``"&#9;"`` of a tab, the char tokenizer ``"▁"`` of a space) --
  and the model gives an empty result for it;
* tokens are never dropped or changed, so a result aligns with its input tokens (an
  unknown token is looked up as ``<unk>`` by the model, and stays as it was in the output)
  -- except that a model trained on lowercased text (``lowercase=True``) reads strings
  lowercased before tokenizing, and token lists lowercased, as its data were read;
* a sentence longer than ``max_length`` tokens (default :data:`MAX_INPUT_TOKENS`) is cut
  to its first ``max_length`` tokens (its last with ``keep="last"``: a language model's
  prompt keeps the context nearest to what it continues), with one
  :class:`~seqlearn.errors.TruncationWarning` per call counting such sentences;
* anything else -- ``None``, a number, bytes, a mapping, a token list holding something
  other than strings -- raises :class:`~seqlearn.errors.InputError` naming the position.

>>> from seqlearn.tokenizers import get_tokenizer
>>> token_lists(["a b", "   ", ["c", "d"]], get_tokenizer("whitespace"), caller="translate")
[['a', 'b'], [], ['c', 'd']]
"""
from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from .errors import ConfigError, InputError, TruncationWarning

__all__ = ["MAX_INPUT_TOKENS", "length_batches", "token_lists"]

#: Tokens of one sentence that ``translate``, ``predict`` and ``generate`` read by default.  The
#: recurrent models have no hard limit, but beyond this an input is not a sentence (a
#: whole document, a tokenizer accident) and decoding time and memory grow with it:
#: ``translate`` allows twice the source length in decoding steps and keeps attention
#: of steps x source tokens for every hypothesis.
MAX_INPUT_TOKENS = 512

_NOT_TEXT = (bytes, bytearray, memoryview)


def token_lists(
    inputs: Any, tokenizer: Any, *, caller: str, max_length: int | None = MAX_INPUT_TOKENS, lowercase: bool = False,
    keep: str = "first",
) -> list[list[str]]:
    """``inputs`` (a string, or an iterable of strings and token lists) as one token list
    per sentence; see the module docstring.  ``caller`` names the method in messages;
    ``max_length=None`` keeps every token; ``keep`` (``"first"`` or ``"last"``) says which
    ``max_length`` tokens of a longer sentence are kept; ``lowercase`` lowercases strings
    before tokenizing and the tokens of token lists."""
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise ConfigError(f"{caller}: max_input_length must be a positive int or None, got {max_length!r}")
    if keep not in ("first", "last"):
        raise ConfigError(f"{caller}: keep must be 'first' or 'last', got {keep!r}")
    if isinstance(inputs, str):
        inputs = [inputs]
    elif isinstance(inputs, _NOT_TEXT + (Mapping,)) or not isinstance(inputs, Iterable):
        raise InputError(
            f"{caller} takes a string or a list of sentences (strings or token lists), got {_kind(inputs)}"
        )
    out = [_tokens(item, i, tokenizer, caller, lowercase) for i, item in enumerate(inputs)]
    if max_length is not None:
        long = [i for i, tokens in enumerate(out) if len(tokens) > max_length]
        if long:
            warnings.warn(
                f"{caller}: {len(long)} input(s) longer than {max_length} tokens cut to their {keep} {max_length} "
                f"(the first is input {long[0]}, {len(out[long[0]])} tokens); pass max_input_length to change the limit",
                TruncationWarning,
                stacklevel=_caller_level(),
            )
            for i in long:
                out[i] = out[i][:max_length] if keep == "first" else out[i][-max_length:]
    return out


def length_batches(token_lists: Sequence[Sequence[str]], batch_size: int) -> Iterator[list[int]]:
    """The positions of the non-empty token lists, shortest first, in batches of at most
    ``batch_size``: little padding per batch.  Empty inputs are left out: they get the
    empty result without running the model."""
    todo = sorted((i for i, tokens in enumerate(token_lists) if tokens), key=lambda i: len(token_lists[i]))
    for start in range(0, len(todo), batch_size):
        yield todo[start : start + batch_size]


def _tokens(item: Any, index: int, tokenizer: Any, caller: str, lowercase: bool) -> list[str]:
    if isinstance(item, str):
        return tokenizer.tokenize(item.lower() if lowercase else item) if item.strip() else []
    if isinstance(item, _NOT_TEXT + (Mapping,)) or not isinstance(item, Iterable):
        raise InputError(f"{caller}: input {index} is {_kind(item)}; a sentence is a string or a list of token strings")
    tokens = list(item)
    for j, token in enumerate(tokens):
        if not isinstance(token, str):
            raise InputError(f"{caller}: token {j} of input {index} is {_kind(token)}; tokens must be strings")
    return [t.lower() for t in tokens] if lowercase else tokens


def _caller_level() -> int:
    """The ``stacklevel`` that attributes a warning to the first frame outside seqlearn
    (and torch's ``no_grad`` decorator): the user's call of ``translate`` or ``predict``."""
    level, frame = 2, sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(("seqlearn.", "torch.")):
        level, frame = level + 1, frame.f_back
    return level


def _kind(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"
