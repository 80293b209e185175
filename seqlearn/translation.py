"""What a trained :class:`~seqlearn.Seq2Seq` does with text: translate, sample, score, show.

:class:`TranslationMethods` is a part of :class:`~seqlearn.Seq2Seq` (kept apart from the
network and its training in :mod:`seqlearn.seq2seq`)::

    model.translate(["ein hund läuft"], beam_size=5)[0][0].tokens   # ['a', 'dog', 'runs']
    model.score(["ein hund läuft"], ["a dog runs"])                  # tensor([-0.41])

Decoding goes through the search protocol (:class:`seqlearn.protocols.SearchModel`):
``start`` and ``search_step`` of the model, driven by a strategy of :mod:`seqlearn.search`.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch

from . import search
from .batching import Padded, pad
from .errors import ConfigError, check_hyperparameters
from .inputs import MAX_INPUT_TOKENS, length_batches, token_lists
from .protocols import decode
from .search import Hypothesis
from .training import evaluating

__all__ = ["TranslationMethods", "SEARCH_PRECISIONS", "SEARCH_SETTINGS", "NOT_GIVEN", "default_max_length",
           "check_search_defaults"]

#: ``precision`` of search -> autocast dtype ("32": no autocast)
SEARCH_PRECISIONS = {"32": torch.float32, "bf16": torch.bfloat16, "16": torch.float16}


def default_max_length(longest_source: int) -> int:
    """Decoding steps allowed when the caller names none: 100, or twice the longest source
    plus 10 when that is more.  A constant for ordinary sentences keeps a translation the
    same whatever batch it is decoded in."""
    return max(100, 2 * longest_source + 10)


class _NotGiven:
    """The default of :meth:`TranslationMethods.translate`'s search settings: "the caller did not say"."""

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Any = _NotGiven()

#: The search settings of :meth:`TranslationMethods.translate` and their built-in values.  A
#: model's ``search_defaults`` hyperparameter (a dict of some of these) replaces the built-in
#: values -- a converted OpenNMT-py model keeps the tool's length penalty, stopping rule and
#: max-length rule this way -- and an argument the caller passes replaces both.
#:
#: The max-length rule: ``max_length`` caps the decoding steps (``</s>`` included);
#: ``max_length_ratio`` (None: off) gives each sentence its own limit
#: ``int(max_length_ratio * n + max_length_offset)``, ``n`` the tokens the encoder reads
#: (its ``</s>`` included when the model appends one); ``max_length_ratio_limits`` says when
#: that limit applies: ``"always"`` (the smaller of the two; OpenNMT-py) or ``"unset"`` (only
#: when no ``max_length`` is set; JoeyNMT).  With neither, :func:`default_max_length` of the
#: longest input.  The other settings are :func:`seqlearn.search.beam_search`'s.
SEARCH_SETTINGS: dict[str, Any] = {
    "beam_size": 1, "n_best": 1, "max_length": None, "min_length": 0, "length_penalty": None, "alpha": 1.0,
    "length_penalty_offset": 0, "block_ngram_repeat": 0, "coverage_penalty": 0.0, "stopping": "exact",
    "beam_refill": True, "max_length_ratio": None, "max_length_offset": 0.0, "max_length_ratio_limits": "always",
}
_RATIO_LIMITS = ("always", "unset")


def check_search_defaults(search_defaults: dict[str, Any] | None, owner: str = "Seq2Seq") -> None:
    """Raise ConfigError unless ``search_defaults`` is None or a dict of known search settings."""
    if search_defaults is None:
        return
    if not isinstance(search_defaults, dict):
        raise ConfigError(f"{owner}: search_defaults must be a dict of search settings, got {type(search_defaults).__name__}")
    unknown = sorted(set(search_defaults) - set(SEARCH_SETTINGS))
    if unknown:
        raise ConfigError(f"{owner}: unknown search_defaults {unknown}; known: {', '.join(SEARCH_SETTINGS)}")
    if search_defaults.get("max_length_ratio_limits", "always") not in _RATIO_LIMITS:
        raise ConfigError(f"{owner}: max_length_ratio_limits must be one of {', '.join(_RATIO_LIMITS)}")


def length_limits(lengths: Sequence[int], settings: dict[str, Any]) -> list[int]:
    """Each sentence's limit on decoding steps under the max-length rule of ``settings``
    (see :data:`SEARCH_SETTINGS`); ``lengths`` are the tokens each encoder input holds."""
    max_length, ratio = settings["max_length"], settings["max_length_ratio"]
    if ratio is None or (max_length is not None and settings["max_length_ratio_limits"] == "unset"):
        return [max_length or default_max_length(max(lengths, default=1))] * len(lengths)
    own = [int(ratio * n + settings["max_length_offset"]) for n in lengths]
    return own if max_length is None else [min(max_length, n) for n in own]


class TranslationMethods:
    """Inference of :class:`~seqlearn.Seq2Seq` (see the module docstring); it relies on the
    model's vocabularies, tokenizers, ``start``/``search_step`` and ``forward``."""

    def _strings(self, ids: Iterable[int]) -> list[str]:
        itos = self.tgt_vocab.itos
        return [itos[i] for i in ids]

    def _source_batch(self, token_lists: Sequence[Sequence[str]]) -> Padded:
        ids = [self.src_vocab.encode(tokens, add_eos=self.hparams.src_eos) for tokens in token_lists]
        return pad(ids, self.src_vocab.pad_index).to(self.device)

    def search_settings(self, **given: Any) -> dict[str, Any]:
        """Every search setting of :data:`SEARCH_SETTINGS`: those ``given`` (other than
        :data:`NOT_GIVEN`), else the model's ``search_defaults``, else the built-in values::

            model.search_settings(beam_size=5)["length_penalty"]   # None; "average" for an OpenNMT-py model
        """
        unknown = sorted(set(given) - set(SEARCH_SETTINGS))
        if unknown:
            raise ConfigError(f"unknown search settings {unknown}; known: {', '.join(SEARCH_SETTINGS)}")
        defaults = {**SEARCH_SETTINGS, **(self.hparams.get("search_defaults") or {})}
        return {k: given[k] if given.get(k, NOT_GIVEN) is not NOT_GIVEN else v for k, v in defaults.items()}

    def _search(self, src: Padded, strategy: Callable[..., list[list[Hypothesis]]], max_length: int | None = None,
                precision: str = "32", **options: Any) -> list[list[Hypothesis]]:
        """``strategy`` (of :mod:`seqlearn.search`) run on a source batch through the search
        protocol (:func:`seqlearn.protocols.decode`), in eval mode without gradients, at
        ``precision`` (see :meth:`translate`).  Hypotheses hold token ids."""
        if precision not in SEARCH_PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(SEARCH_PRECISIONS)}; got {precision!r}")
        # search_step() returns float32 log-probabilities, so scores add up in float32 under autocast;
        # no_grad, not inference_mode, under autocast: only then does autocast cast each weight
        # once per batch instead of at every step (it caches casts of tensors that require grad)
        autocast = precision != "32"
        with evaluating(self), torch.no_grad() if autocast else torch.inference_mode(), torch.autocast(
            self.device.type, dtype=SEARCH_PRECISIONS[precision], enabled=autocast
        ):
            return decode(
                self, strategy, src, bos_index=self.tgt_vocab.bos_index, eos_index=self.tgt_vocab.eos_index,
                max_length=max_length or default_max_length(int(src.lengths.max())), **options,
            )

    def _decode_inputs(
        self, sources: list[list[str]], batch_size: int, return_attention: bool,
        run: Callable[[Padded, int], list[list[Hypothesis]]], settings: dict[str, Any],
    ) -> list[list[Hypothesis]]:
        """``run(source batch, max_length)`` over ``sources`` in batches of similar length;
        sentences whose max-length rule (in ``settings``) gives them different limits are
        decoded apart, so each gets its own."""
        check_hyperparameters("Seq2Seq", positive={"batch_size": batch_size})
        limits = length_limits([len(t) + self.hparams.src_eos for t in sources], settings)
        results: list[list[Hypothesis]] = [[Hypothesis([], 0.0, None, [], "")] for _ in sources]  # empty in, empty out
        for chunk in length_batches(sources, batch_size):
            for limit in sorted({limits[i] for i in chunk}):
                part = [i for i in chunk if limits[i] == limit]
                src = self._source_batch([sources[i] for i in part])
                for i, src_len, hyps in zip(part, src.lengths.tolist(), run(src, limit)):
                    results[i] = [self._readable(h, sources[i], src_len if return_attention else None) for h in hyps]
        return results

    def _readable(self, hyp: Hypothesis, source: list[str], src_len: int | None) -> Hypothesis:
        """``hyp`` of search (token ids) with token strings, text and ``source``, and its
        attention cut to the ``src_len`` columns of its source (None: no attention)."""
        tokens = self._strings(hyp.tokens)
        attention = None if src_len is None or hyp.attention is None else hyp.attention[:, :src_len].float().cpu()
        return Hypothesis(tokens, hyp.score, attention, source, self.tgt_tokenizer.detokenize(tokens))

    def translate(
        self,
        inputs: str | Sequence[str | Sequence[str]],
        beam_size: int = NOT_GIVEN,
        n_best: int = NOT_GIVEN,
        max_length: int | None = NOT_GIVEN,
        length_penalty: str | None = NOT_GIVEN,
        return_attention: bool = False,
        *,
        alpha: float = NOT_GIVEN,
        min_length: int = NOT_GIVEN,
        block_ngram_repeat: int = NOT_GIVEN,
        coverage_penalty: float = NOT_GIVEN,
        batch_size: int = 64,
        max_input_length: int | None = MAX_INPUT_TOKENS,
        precision: str = "32",
        stopping: str = NOT_GIVEN,
        **search_options: Any,
    ) -> list[list[Hypothesis]]:
        """Translate sentences (strings, tokenized with the model's source tokenizer) or token
        lists.  Returns, per input, up to ``n_best`` :class:`~seqlearn.search.Hypothesis`
        objects, best first, their tokens strings and their ``text`` the translation
        detokenized by the target tokenizer; each carries its ``source`` tokens.

        Inputs (see :mod:`seqlearn.inputs`): one string is one sentence; a sentence is a
        string or a list of token strings.  A source token the vocabulary does not know is
        read as ``<unk>`` (``source`` keeps it as given, so attention columns still align
        with it).  An empty or whitespace-only sentence gives one empty hypothesis
        (``tokens == []``, score 0, ``source == []``), not an error.  A sentence longer than
        ``max_input_length`` tokens (default :data:`~seqlearn.inputs.MAX_INPUT_TOKENS`, 512;
        None for no limit) is cut to that many, with a
        :class:`~seqlearn.errors.TruncationWarning`.  ``None``, numbers, bytes or token lists
        holding non-strings raise :class:`~seqlearn.errors.InputError`.

        Search settings (see :data:`SEARCH_SETTINGS`; ``search_options`` takes the rest of
        them, e.g. ``beam_refill=False``): one not passed takes the model's own default (its
        ``search_defaults`` hyperparameter), else the built-in one, which is: ``beam_size``
        1 without length or coverage penalty or n-gram blocking is greedy search; otherwise
        beam search (see :func:`seqlearn.search.beam_search` for ``length_penalty``
        ``"gnmt"``/``"average"`` with ``alpha``, ``stopping`` and the rest).
        ``max_length`` counts decoding steps, ``</s>`` included (default:
        :func:`default_max_length` of the longest input).  ``precision="bf16"`` runs the
        matrix products in bfloat16 (autocast; scores stay float32), usually with the same
        translations (``"16"``: float16, for GPUs; the README's benchmarks give speeds).
        With ``return_attention`` each
        hypothesis carries its attention ``(steps, src_len + 1)``: a row per scored step
        (``</s>`` included), a column per source token and the source's ``</s>``.
        """
        settings = self.search_settings(
            beam_size=beam_size, n_best=n_best, max_length=max_length, length_penalty=length_penalty, alpha=alpha,
            min_length=min_length, block_ngram_repeat=block_ngram_repeat, coverage_penalty=coverage_penalty,
            stopping=stopping, **search_options)
        options = {k: settings[k] for k in ("beam_size", "n_best", "min_length", "length_penalty", "alpha",
                                            "length_penalty_offset", "block_ngram_repeat", "coverage_penalty",
                                            "stopping", "beam_refill")}
        return self._decode_inputs(
            token_lists(inputs, self.src_tokenizer, caller="translate", max_length=max_input_length),
            batch_size, return_attention,
            lambda src, limit: self._search(
                src, search.most_probable, limit, precision, src_mask=src.mask, per_sentence=self.decoder.per_sentence,
                **options,
            ),
            settings,
        )

    def sample(
        self,
        inputs: str | Sequence[str | Sequence[str]],
        num_samples: int = 1,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        max_length: int | None = NOT_GIVEN,
        return_attention: bool = False,
        generator: torch.Generator | None = None,
        batch_size: int = 64,
        max_input_length: int | None = MAX_INPUT_TOKENS,
        precision: str = "32",
    ) -> list[list[Hypothesis]]:
        """Sampled translations (see :func:`seqlearn.search.sample`); inputs, ``max_length``
        and ``precision`` as for :meth:`translate`."""
        options = {"num_samples": num_samples, "temperature": temperature, "top_k": top_k, "top_p": top_p,
                   "generator": generator}
        return self._decode_inputs(
            token_lists(inputs, self.src_tokenizer, caller="sample", max_length=max_input_length),
            batch_size, return_attention,
            lambda src, limit: self._search(src, search.sample, limit, precision, **options),
            self.search_settings(max_length=max_length),
        )

    def show_attention(self, inputs: str | Sequence[str | Sequence[str]], beam_size: int = 1, n_best: int = 1,
                       **translate_options: Any) -> Any:
        """Translate ``inputs`` and show each hypothesis' attention in a notebook widget
        (:class:`seqlearn.widgets.AttentionView`; needs the ``notebook`` extra)."""
        from .widgets import show_model_attention

        return show_model_attention(self, inputs, beam_size=beam_size, n_best=n_best, **translate_options)

    def show_hidden_states(self, sentence: str | Sequence[str], **view_options: Any) -> Any:
        """Show the encoder's per-token hidden states and gate activations for ``sentence``
        (:class:`seqlearn.widgets.HiddenStateView`)."""
        from .widgets import show_hidden_states

        return show_hidden_states(self, sentence, **view_options)

    def score(
        self, sources: Sequence[str | Sequence[str]], targets: Sequence[str | Sequence[str]], batch_size: int = 64
    ) -> torch.Tensor:
        """Summed log-probability of each target given its source (``</s>`` included),
        teacher-forced in eval mode: ``(len(sources),)``.  Sentences as for :meth:`translate`,
        never truncated."""
        src_lists = token_lists(sources, self.src_tokenizer, caller="score", max_length=None)
        tgt_lists = token_lists(targets, self.tgt_tokenizer, caller="score", max_length=None)
        if len(src_lists) != len(tgt_lists):
            raise ConfigError(f"score: {len(src_lists)} sources but {len(tgt_lists)} targets")
        scores = []
        with evaluating(self):
            for start in range(0, len(src_lists), batch_size):
                src = self._source_batch(src_lists[start : start + batch_size])
                tgt = pad(
                    [self.tgt_vocab.encode(t, add_bos=True, add_eos=True) for t in tgt_lists[start : start + batch_size]],
                    self.tgt_vocab.pad_index,
                ).ids.to(self.device)
                log_probs = torch.log_softmax(self(src, tgt[:, :-1]).float(), -1)
                gold = tgt[:, 1:]
                token_scores = log_probs.gather(-1, gold.unsqueeze(-1)).squeeze(-1)
                scores.append(token_scores.masked_fill(gold == self.tgt_vocab.pad_index, 0.0).sum(1).cpu())
        return torch.cat(scores) if scores else torch.zeros(0)

