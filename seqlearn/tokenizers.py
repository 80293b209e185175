"""Tokenizers: text to token lists and back, registered under ``registry.tokenizers``.

=================  =====================================================================
name               what it does
=================  =====================================================================
``spacy:<lang>``   spaCy's rule-based tokenizer of ``spacy.blank(lang)`` (no model download)
``nltk:toktok``    NLTK's Toktok tokenizer
``nltk:treebank``  NLTK's Penn Treebank tokenizer, detokenized by NLTK's own detokenizer
``whitespace``     ``str.split()``
``char``           characters; a space becomes the token ``"▁"``
``sentencepiece``  ``sentencepiece:<path/x.model>``: a SentencePiece model's subword pieces
=================  =====================================================================

Every tokenizer has ``tokenize(text) -> list[str]``, ``tokenize_batch(texts) ->
list[list[str]]`` (much faster than a loop for spaCy) and ``detokenize(tokens) -> str``,
which BLEU scoring needs since BLEU is computed on detokenized text.

The built-ins tokenize any ``str`` into a list of non-empty strings (``[]`` for ``""``);
anything that is not a ``str`` raises :class:`~seqlearn.errors.InputError`, and text
spaCy cannot encode (a lone surrogate such as ``"\ud800"``, which no UTF-8 file holds)
raises :class:`~seqlearn.errors.DataError`.

>>> tok = get_tokenizer("nltk:toktok")
>>> tok.tokenize('A man in a "dark-blue" shirt, sitting.')
['A', 'man', 'in', 'a', '"', 'dark-blue', '"', 'shirt', ',', 'sitting', '.']
>>> tok.detokenize(tok.tokenize('A man in a "dark-blue" shirt, sitting.'))
'A man in a "dark-blue" shirt, sitting.'
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

from . import registry
from .errors import ConfigError, DataError, InputError

__all__ = [
    "Tokenizer",
    "SpacyTokenizer",
    "ToktokTokenizer",
    "TreebankTokenizer",
    "WhitespaceTokenizer",
    "CharTokenizer",
    "get_tokenizer",
    "rule_detokenize",
]


def checked_text(text: Any, tokenizer: Any) -> str:
    """``text`` if it is a ``str``; an InputError naming ``tokenizer`` otherwise."""
    if not isinstance(text, str):
        raise InputError(f"{tokenizer!r} tokenizes text (str), got {type(text).__name__} {repr(text)[:40]}")
    return text


class Tokenizer:
    """Base class: subclasses implement :meth:`tokenize` and :meth:`detokenize`; a
    tokenizer with a faster batch path overrides :meth:`tokenize_batch`.

    A plugin tokenizer need not derive from this class: anything with ``tokenize`` and
    ``detokenize`` methods is accepted by :func:`get_tokenizer` and the readers.
    """

    def tokenize(self, text: str) -> list[str]:
        raise NotImplementedError

    def tokenize_batch(self, texts: Iterable[str]) -> list[list[str]]:
        return [self.tokenize(t) for t in texts]

    def detokenize(self, tokens: Sequence[str]) -> str:
        raise NotImplementedError

    def cache_identity(self) -> str:
        """What the tokens depend on besides seqlearn's version, for the corpus cache's key
        (:func:`~seqlearn.corpus_cache.tokenizer_identity`)."""
        return repr(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# -- rule-based detokenizer -------------------------------------------------------------

# tokens written without a space before them
_NO_SPACE_BEFORE = frozenset(
    [",", ".", "!", "?", ";", ":", "%", ")", "]", "}", "...", "…", "”", "’", "'s", "'S", "n't", "N'T",
     "'re", "'RE", "'ve", "'VE", "'ll", "'LL", "'d", "'D", "'m", "'M", "’s", "n’t", "’re", "’ve", "’ll", "’d", "’m"]
)
# tokens written without a space after them
_NO_SPACE_AFTER = frozenset(["(", "[", "{", "„", "‚", "‘", "¿", "¡", "$", "£"])
# what follows an apostrophe that Toktok splits off a contraction: "don ' t", "it ' s"
_CLITIC_TAILS = frozenset(["s", "t", "re", "ve", "ll", "d", "m"])


def rule_detokenize(tokens: Sequence[str]) -> str:
    """Join tokens with spaces, except where typography writes none.

    The rules undo what the spaCy and Toktok tokenizers split off, so that ordinary
    English and German sentences round-trip exactly:

    * no space before closing punctuation ``, . ! ? ; : % ) ] } ... …`` nor before an
      English clitic (``'s``, ``n't``, ``'re`` ...), none after ``( [ { „ ‚ ‘ ¿ ¡ $ £``;
    * a straight quote ``"`` (or ``'``) opens and closes in turn: no space after an
      opening one, none before a closing one; ``“`` closes a German ``„`` and opens
      otherwise;
    * an apostrophe followed by a clitic tail (Toktok's ``don ' t``) and a hyphen between
      two word tokens (spaCy's ``dark - haired``) are glued on both sides.

    It cannot know what the tokenizer threw away: a spaced hyphen ``"Paris - Rome"``
    comes back as ``"Paris-Rome"``, and ``cannot`` (spaCy: ``can not``) stays split.
    """
    out: list[str] = []
    glue_next = False
    open_quote = {'"': False, "'": False}
    low_open = False  # a German „ waits for its “
    for i, tok in enumerate(tokens):
        prev = tokens[i - 1] if i > 0 else ""
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        space = bool(out) and not glue_next
        glue_next = False
        if tok == "'" and prev[-1:].isalnum() and nxt.lower() in _CLITIC_TAILS:
            space, glue_next = False, True
        elif tok == "-" and prev[-1:].isalnum() and nxt[:1].isalnum():
            space, glue_next = False, True
        elif tok in open_quote:
            if open_quote[tok]:
                space = False
            else:
                glue_next = True
            open_quote[tok] = not open_quote[tok]
        elif tok == "“":
            if low_open:
                space, low_open = False, False
            else:
                glue_next = True
        elif tok in _NO_SPACE_BEFORE:
            space = False
        elif tok in _NO_SPACE_AFTER:
            glue_next = True
            low_open = low_open or tok == "„"
        out.append(" " + tok if space else tok)
    return "".join(out)


# -- spaCy --------------------------------------------------------------------------------

# spacy.blank(lang) by language, shared by every SpacyTokenizer: building one takes up to
# seconds (French compiles large exception tables), and the tokenizer holds no per-use state.
_BLANK_PIPELINES: dict[str, Any] = {}


def _blank_pipeline(lang: str) -> Any:
    nlp = _BLANK_PIPELINES.get(lang)
    if nlp is None:
        import spacy  # imported on first use: it takes seconds

        try:
            nlp = spacy.blank(lang)
        except (ImportError, ValueError, KeyError) as exc:
            raise ConfigError(
                f"spaCy has no language {lang!r} (use a code such as 'en', 'de', 'fr': tokenizer 'spacy:<lang>')"
            ) from exc
        _BLANK_PIPELINES[lang] = nlp
    return nlp


@registry.tokenizers.register("spacy")
class SpacyTokenizer(Tokenizer):
    """spaCy's rule-based tokenizer for ``lang`` (``registry.tokenizers.build("spacy:de")``).

    Tokens are those of ``spacy.blank(lang).tokenizer`` without the whitespace tokens
    spaCy makes of repeated or trailing spaces.  The blank pipeline is built once per
    language and shared.  Detokenization is :func:`rule_detokenize`.
    """

    def __init__(self, lang: str | None = None):
        if not lang:
            raise ConfigError("the spaCy tokenizer needs a language: name it 'spacy:<lang>', e.g. 'spacy:de'")
        self.lang = lang
        self.nlp = _blank_pipeline(lang)

    def tokenize(self, text: str) -> list[str]:
        return self.tokenize_batch([text])[0]

    def tokenize_batch(self, texts: Iterable[str]) -> list[list[str]]:
        texts = [checked_text(t, self) for t in texts]
        try:
            docs = list(self.nlp.tokenizer.pipe(texts, batch_size=1000))
        except UnicodeEncodeError as exc:  # spaCy encodes to UTF-8, which has no lone surrogates
            raise DataError(f"{self!r} cannot tokenize text holding {exc.object[exc.start:exc.end]!r}, a lone "
                            f"surrogate, which is not valid Unicode") from None
        return [[t.text for t in doc if not t.is_space] for doc in docs]

    def detokenize(self, tokens: Sequence[str]) -> str:
        return rule_detokenize(tokens)

    def __repr__(self) -> str:
        return f"SpacyTokenizer({self.lang!r})"

    def cache_identity(self) -> str:
        import spacy

        return f"{self!r} spacy {spacy.__version__}"

    # pickled (DataLoader workers, checkpoints) by language, not by pipeline
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "nlp"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.nlp = _blank_pipeline(self.lang)


# -- NLTK ---------------------------------------------------------------------------------


def _nltk_version() -> str:
    import nltk

    return f"nltk {nltk.__version__}"


@registry.tokenizers.register("nltk:toktok")
class ToktokTokenizer(Tokenizer):
    """NLTK's Toktok tokenizer (needs no NLTK data); detokenized by :func:`rule_detokenize`."""

    def __init__(self) -> None:
        from nltk.tokenize import ToktokTokenizer as _Toktok

        self._tok = _Toktok()

    def cache_identity(self) -> str:
        return f"{self!r} {_nltk_version()}"

    def tokenize(self, text: str) -> list[str]:
        return self._tok.tokenize(checked_text(text, self))

    def detokenize(self, tokens: Sequence[str]) -> str:
        return rule_detokenize(tokens)


@registry.tokenizers.register("nltk:treebank")
class TreebankTokenizer(Tokenizer):
    """NLTK's Penn Treebank tokenizer (``"`` becomes ``\\`\\``` / ``''``) and its
    TreebankWordDetokenizer, which undoes it."""

    def __init__(self) -> None:
        from nltk.tokenize import TreebankWordTokenizer
        from nltk.tokenize.treebank import TreebankWordDetokenizer

        self._tok = TreebankWordTokenizer()
        self._detok = TreebankWordDetokenizer()

    def cache_identity(self) -> str:
        return f"{self!r} {_nltk_version()}"

    def tokenize(self, text: str) -> list[str]:
        return self._tok.tokenize(checked_text(text, self))

    def detokenize(self, tokens: Sequence[str]) -> str:
        return self._detok.detokenize(list(tokens))


# -- trivial ------------------------------------------------------------------------------


@registry.tokenizers.register("whitespace")
class WhitespaceTokenizer(Tokenizer):
    """``text.split()``; detokenizes with single spaces."""

    def tokenize(self, text: str) -> list[str]:
        return checked_text(text, self).split()

    def detokenize(self, tokens: Sequence[str]) -> str:
        return " ".join(tokens)


@registry.tokenizers.register("char")
class CharTokenizer(Tokenizer):
    """One token per character.  A space becomes the visible token ``space`` (default
    ``"▁"``, U+2581 as in SentencePiece) so token lists and attention plots stay
    readable; other characters, other whitespace included, are their own tokens.

    ``detokenize(tokenize(s)) == s`` for every ``s`` without the ``space`` character in
    it; ``CharTokenizer(space=" ")`` round-trips every string.
    """

    def __init__(self, space: str = "▁"):
        if len(space) != 1:
            raise ConfigError(f"CharTokenizer space must be one character, got {space!r}")
        self.space = space

    def tokenize(self, text: str) -> list[str]:
        return list(checked_text(text, self).replace(" ", self.space))

    def detokenize(self, tokens: Sequence[str]) -> str:
        return "".join(tokens).replace(self.space, " ")

    def __repr__(self) -> str:
        return f"CharTokenizer(space={self.space!r})"


def get_tokenizer(name_or_obj: Any) -> Any:
    """A tokenizer from a registry name (``"spacy:de"``, ``"nltk:toktok"``, a plugin's
    name...) or a tokenizer object, which is returned as is.

    Building a spaCy tokenizer again is cheap: the blank pipeline is cached per language.
    An unknown name raises :class:`~seqlearn.errors.UnknownComponentError` listing the
    available names.
    """
    if isinstance(name_or_obj, str):
        return registry.tokenizers.build(name_or_obj)
    if callable(getattr(name_or_obj, "tokenize", None)):
        return name_or_obj
    raise ConfigError(f"a tokenizer must be a registered name or have a tokenize method, got {name_or_obj!r}")
