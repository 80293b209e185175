"""Recurrent language models: truncated BPTT over parallel streams, generation, streaming.

::

    dm = LanguageModelDataModule("train.en.gz", "val.en.gz", tokenizer="spacy:en", lowercase=True)
    model = LanguageModel.from_datamodule(dm, cell="lstm", embedding_dim=256, num_layers=2)
    pl.Trainer(max_epochs=10, gradient_clip_val=0.25).fit(model, dm)
    model.sample("a dog", top_p=0.9)[0][0].tokens        # ['runs', 'on', 'the', 'beach', '.']

Architecture: embedding -> stacked unidirectional layers of any registered cell
(:class:`~seqlearn.encoder.RNNEncoder`) -> linear output layer over the vocabulary.
Dropout is variational (Gal & Ghahramani 2016): one mask per stream and window, the same at
every time step, on the embeddings (``input_dropout``), between layers and on the top
layer's output (``dropout``).  ``tie_embeddings`` makes the output layer's weight *the*
embedding matrix (Press & Wolf 2017; Inan et al. 2017); when ``hidden_size`` differs from
``embedding_dim`` a linear projection maps the top layer's output to ``embedding_dim`` first.

Truncated backpropagation through time (TBPTT)
----------------------------------------------
The data are parallel contiguous streams cut into windows of ``bptt`` tokens
(:mod:`seqlearn.streams`).  Lightning 2 has no truncated-BPTT option any more, so the
model does it itself: each training window (:meth:`batch_result`) starts from the final recurrent
state of the previous window of the same split, *detached* (gradients flow back through
one window only, while the state -- the context -- flows on through the whole stream).
The state lives on the module between batches of an epoch, one per split (train,
validation, test), and is reset to zeros at every window with offset 0 -- the first
window of each epoch.  ``carry_state=False`` starts every window from zeros instead
(independent windows, for comparison).  A checkpoint holds the training state carried out
of the last window, and the data module's loader its position in the epoch, so a run
resumed mid-epoch goes on exactly where it stopped.

Faults (see :mod:`seqlearn.training`): a non-finite training loss raises
:class:`~seqlearn.errors.NonFiniteLossError` naming the window (``on_nonfinite="stop"``) or
skips it (``"skip"``: the weights and optimizer state stay as they were).  A skipped
window's final state may carry the non-finite values on, so the carried state is reset
and the next window starts from zeros, as at the start of an epoch.  Checkpoints carry the
random state and are written atomically.  Training runs in one process: the windows of
the streams follow each other in order, which splitting batches over DDP processes would
break, so a Trainer with several processes is a :class:`~seqlearn.errors.ConfigError`
(use more parallel streams, ``batch_size``, for throughput).

Logged metrics (by :class:`~seqlearn.training.TrainingModule`): ``train_loss`` (mean
token NLL) each step, ``train_ppl`` each epoch, ``val_loss`` and ``val_ppl`` each
validation epoch (``test_*`` likewise), perplexity being ``exp`` of the mean NLL over all
tokens of the epoch.

Generation and streaming
------------------------
Sentences are separated by ``</s>`` in the streams, so a sentence starts after ``</s>`` and
ends at the next one.  :meth:`generate` (greedy or beam search) and :meth:`sample`
(temperature, top-k, top-p) continue prompts through the strategies of
:mod:`seqlearn.search`, with :meth:`start` and :meth:`search_step` as the search protocol
(:class:`seqlearn.protocols.SearchModel`).  Prompts are read as :mod:`seqlearn.inputs`
reads sentences.  :meth:`init_state` and :meth:`step` score a stream one token at a time
with constant memory (:class:`seqlearn.protocols.StreamingModel`)::

    state = model.init_state()
    for token in "a dog runs".split():
        log_probs, state = model.step(token, state)   # (1, V): the next token's distribution
"""
from __future__ import annotations

from functools import cached_property
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import search
from .batching import Padded, StreamBatch, pad
from .cells import State, map_state, state_tensors
from .checkpoint_loading import SafeCheckpointLoading
from .encoder import RNNEncoder, locked_dropout
from .errors import ConfigError, check_hyperparameters
from .inputs import MAX_INPUT_TOKENS, token_lists
from .optim import check_optimization, configure_optimization
from .protocols import decode
from .renamed import accepts_old_names
from .search import Hypothesis
from .tokenizers import get_tokenizer
from .training import BatchResult, TrainingModule, check_nonfinite_policy, evaluating
from .vocab import Vocab

__all__ = ["LanguageModel"]

Tokens = int | str | Sequence[int | str] | torch.Tensor


class LanguageModel(SafeCheckpointLoading, TrainingModule):
    """A stacked RNN language model over any registered cell (see the module docstring).

    vocab: :class:`Vocab` or its ``to_dict()`` (stored as a dict); it needs ``</s>``.
    tokenizer, lowercase: how :meth:`generate`, :meth:`sample` and :meth:`step` read text
        (registry name: ``"whitespace"``, ``"spacy:en"``, ``"char"``...), as the data were read.
    cell, cell_options: the registered cell and its options; num_layers, hidden_size.
    embedding_dim: input embeddings (and output layer when tied); hidden_size defaults to it.
    dropout, input_dropout: variational dropout between layers and on the output, and on
        the embeddings.
    tie_embeddings: share the embedding matrix with the output layer.
    carry_state: carry the detached state from window to window (truncated BPTT), or start
        every window from zeros.
    optimizer (``adam``, ``rmsprop``, ``sgd``), lr, weight_decay, momentum; lr_scheduler
        with lr_gamma, lr_step_size, lr_patience, lr_min (see :mod:`seqlearn.optim`), e.g.
        ``"plateau"``: multiply the learning rate by ``lr_gamma`` when ``val_loss`` has not
        improved for ``lr_patience`` epochs, the classic recipe with SGD.  Clip gradients
        with the Trainer's ``gradient_clip_val``.
    on_nonfinite: ``"stop"`` (default) raises :class:`~seqlearn.errors.NonFiniteLossError`
        naming the window when the training loss is NaN or infinite; ``"skip"`` warns, leaves
        the weights alone and starts the next window from a zero state (see the module
        docstring).
    """

    @accepts_old_names
    def __init__(
        self,
        vocab: Vocab | dict,
        *,
        tokenizer: str = "whitespace",
        lowercase: bool = False,
        cell: str = "lstm",
        cell_options: dict[str, Any] | None = None,
        embedding_dim: int = 256,
        hidden_size: int | None = None,
        num_layers: int = 2,
        dropout: float = 0.3,
        input_dropout: float = 0.1,
        tie_embeddings: bool = True,
        carry_state: bool = True,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        lr_scheduler: str = "none",
        lr_gamma: float = 0.25,
        lr_step_size: int = 1,
        lr_patience: int = 0,
        lr_min: float = 0.0,
        on_nonfinite: str = "stop",
    ):
        super().__init__()
        check_nonfinite_policy(on_nonfinite)
        vocab = Vocab.coerce(vocab, "vocab").to_dict()  # a plain hyperparameter
        check_optimization("LanguageModel", optimizer, lr_scheduler, lr_gamma, lr_step_size)
        for name, p in (("dropout", dropout), ("input_dropout", input_dropout)):
            if not 0.0 <= p < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {p}")
        hidden_size = hidden_size or embedding_dim
        self.save_hyperparameters()
        self.vocab = Vocab.from_dict(vocab, source="vocab")
        if self.vocab.eos_index is None:
            raise ConfigError("the vocabulary needs </s>: it separates the sentences of the streams")

        self.embedding = nn.Embedding(len(self.vocab), embedding_dim, padding_idx=self.vocab.pad_index)
        self.encoder = RNNEncoder(embedding_dim, hidden_size, cell, num_layers, bidirectional=False,
                                  dropout=dropout, cell_options=cell_options)  # fmt: skip
        self.projection = (
            nn.Linear(hidden_size, embedding_dim) if tie_embeddings and hidden_size != embedding_dim else nn.Identity()
        )
        self.output = nn.Linear(embedding_dim if tie_embeddings else hidden_size, len(self.vocab))
        nn.init.normal_(self.embedding.weight, std=embedding_dim**-0.5)
        if tie_embeddings:
            self.output.weight = self.embedding.weight
        # specials that never follow a token in a stream: masked, so search never emits them
        never = [i for i in (self.vocab.pad_index, self.vocab.bos_index) if i is not None]
        self.register_buffer("_never_next", torch.tensor(never, dtype=torch.long), persistent=False)
        #: the detached state each split's last window ended in (truncated BPTT)
        self._carried: dict[str, list[State] | None] = {}

    @classmethod
    def from_datamodule(cls, datamodule: Any, **kwargs: Any) -> "LanguageModel":
        """A model for the vocabulary, tokenizer and lowercasing of a
        :class:`~seqlearn.streams.LanguageModelDataModule` (set up for fitting first)."""
        datamodule.setup("fit")
        return cls(datamodule.vocab, tokenizer=datamodule.tokenizer, lowercase=datamodule.lowercase, **kwargs)

    @cached_property
    def tokenizer(self) -> Any:
        return get_tokenizer(self.hparams.tokenizer)

    # -- the network ----------------------------------------------------------------------
    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        return locked_dropout(self.embedding(ids), self.hparams.input_dropout, self.training)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``(..., V)`` from top-layer outputs ``(..., hidden)``."""
        return self.output(self.projection(h)).index_fill(-1, self._never_next, float("-inf"))

    def forward(self, ids: torch.Tensor, state: Sequence[State] | None = None) -> tuple[torch.Tensor, list[State]]:
        """Logits ``(batch, len, V)`` of the token after each of ``ids`` ``(batch, len)``, and the
        final state of every layer; ``state`` is the initial one (None: zeros)."""
        h, finals = self.encoder(self._embed(ids), None, state)
        return self._logits(locked_dropout(h, self.hparams.dropout, self.training)), finals

    # -- truncated BPTT ---------------------------------------------------------------------
    def window_nll(self, batch: StreamBatch, split: str, carry_state: bool | None = None) -> torch.Tensor:
        """Mean NLL of the targets of one window, starting from the state carried in
        ``split`` (zeros at offset 0, or when not carrying) and carrying its final state on,
        detached, to the next window of ``split``."""
        carry = self.hparams.carry_state if carry_state is None else carry_state
        state = self._carried.get(split) if carry and batch.offset > 0 else None
        if state is not None and state_tensors(state[0])[0].size(0) != len(batch):
            state = None  # a different number of streams: nothing to continue
        logits, finals = self(batch.input, state)
        self._carried[split] = [map_state(torch.Tensor.detach, s) for s in finals] if carry else None
        return F.cross_entropy(logits.flatten(0, 1).float(), batch.target.flatten())

    def batch_result(self, batch: StreamBatch, split: str) -> BatchResult:
        """The mean token NLL of the window (see :meth:`window_nll`), for ``{split}_loss``
        and ``{split}_ppl``."""
        nll = self.window_nll(batch, split)
        n = torch.tensor(batch.target.numel(), device=nll.device)
        return BatchResult(nll, n, nll=nll.detach() * n)

    def on_skipped_batch(self) -> None:
        # the skipped window's final state may be non-finite too: the next window starts afresh
        self._carried["train"] = None

    def setup(self, stage: str) -> None:
        if self._distributed():
            raise ConfigError(
                f"LanguageModel runs in one process, not {self.trainer.world_size}: its windows follow each other "
                "along contiguous streams and carry the recurrent state, which sharding batches over DDP processes "
                "would break. Use Trainer(devices=1), and more parallel streams (the data module's batch_size) "
                "for throughput"
            )

    def registered_components(self) -> dict[str, Any]:
        """The registry-built components whose provenance checkpoints record (see
        :class:`~seqlearn.training.TrainingModule`)."""
        return {"cell": self.encoder.layers[0].cells[0], "tokenizer": self.tokenizer}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        # the state the next training window starts from: tensors in plain containers
        checkpoint["seqlearn_carried_state"] = self._carried.get("train")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        carried = checkpoint.get("seqlearn_carried_state")
        if carried is not None:
            self._carried["train"] = [map_state(lambda t: t.to(self.device), s) for s in carried]

    def _where(self, batch: Any, batch_idx: int) -> str:
        where = super()._where(batch, batch_idx)
        if isinstance(batch, StreamBatch):
            where += (f": the window of {len(batch)} streams x {batch.input.size(1)} tokens at stream position "
                      f"{batch.offset}")  # fmt: skip
        return where

    def _budget_advice(self) -> str:
        data = self._datamodule()
        now = f" (now batch_size={data.batch_size}, bptt={data.bptt})" if hasattr(data, "bptt") else ""
        return (f"Lower the data module's parallel streams batch_size or its window length bptt{now}, and keep the "
                "effective batch with Trainer(accumulate_grad_batches=k)")  # fmt: skip

    def configure_optimizers(self) -> Any:
        return configure_optimization(self)

    def perplexity(self, windows: Iterable[StreamBatch], carry_state: bool | None = None) -> float:
        """``exp`` of the mean token NLL over ``windows`` (e.g. ``datamodule.windows("valid")``),
        in eval mode, carrying the state across windows or not (default: as in training)."""
        total, count = 0.0, 0
        try:
            with evaluating(self):
                for batch in windows:
                    batch = batch.to(self.device)
                    total += float(self.window_nll(batch, "perplexity", carry_state)) * batch.target.numel()
                    count += batch.target.numel()
        finally:
            self._carried.pop("perplexity", None)
        if not count:
            raise ConfigError("perplexity of no windows")
        return float(torch.exp(torch.tensor(total / count)))

    # -- streaming ----------------------------------------------------------------------------
    @accepts_old_names
    def init_state(self, batch_size: int = 1) -> dict[str, torch.Tensor]:
        """The state before the first token of ``batch_size`` streams (zeros), for :meth:`step`."""
        return self.encoder.init_state(batch_size, self.embedding.weight.device, self.embedding.weight.dtype)

    def token_ids(self, tokens: Tokens) -> torch.Tensor:
        """Token ids ``(N,)`` on the model's device from an id, a token string (looked up in
        the vocabulary, lowercased if the model is), a sequence of those, or a tensor."""
        if torch.is_tensor(tokens):
            return tokens.to(self.embedding.weight.device, torch.long).reshape(-1)
        if isinstance(tokens, (int, str)):
            tokens = [tokens]
        lower = self.hparams.lowercase
        ids = [self.vocab[t.lower() if lower else t] if isinstance(t, str) else int(t) for t in tokens]
        return torch.tensor(ids, dtype=torch.long, device=self.embedding.weight.device)

    @torch.no_grad()
    def step(self, tokens: Tokens, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Read the next token of each stream (see :meth:`token_ids`) and return the
        log-probabilities of the token after it -- ``(V,)`` for a single token (an int or a
        string), ``(N, V)`` for N of them -- and the new state (the old one is left as it
        was).  Inference: no dropout, no gradient; the same numbers as :meth:`forward` in
        eval mode over the whole stream."""
        out, state = self.encoder.step(self.embedding(self.token_ids(tokens)), state)
        log_probs = torch.log_softmax(self._logits(out).float(), -1)
        return (log_probs[0] if isinstance(tokens, (int, str)) else log_probs), state

    # -- generation -----------------------------------------------------------------------------
    def start(self, context: Padded) -> dict[str, torch.Tensor]:
        """Search protocol: the state after reading ``context`` ids ``(batch, len)`` with
        ``lengths`` ``(batch,)`` (a row of length 0 gets the zero state)."""
        state = self.init_state(len(context))
        if context.ids.size(1) == 0:
            return state
        lengths = context.lengths.to(self.embedding.weight.device)
        _, finals = self.encoder(self._embed(context.ids.to(lengths.device)), lengths.clamp(min=1))
        read, empty = self.encoder.pack_state(finals), (lengths == 0)[:, None]
        return {key: torch.where(empty, zeros, read[key]) for key, zeros in state.items()}

    def search_step(
        self, prev_tokens: torch.Tensor, state: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], None]:
        """Search protocol: :meth:`step` on ids ``(N,)`` with no attention."""
        log_probs, state = self.step(prev_tokens, state)
        return log_probs, state, None

    def _search(
        self, prompts: str | Sequence[str | Sequence[str]], strategy: Callable[..., list[list[Hypothesis]]],
        batch_size: int, max_input_length: int | None, caller: str, **options: Any,
    ) -> list[list[Hypothesis]]:
        """Continue each prompt (after ``</s>``: a new sentence) with ``strategy`` (of
        :mod:`seqlearn.search`) through the search protocol, in eval mode; hypotheses hold
        token strings."""
        check_hyperparameters("LanguageModel", positive={"batch_size": batch_size})
        prompt_tokens = token_lists(prompts, self.tokenizer, caller=caller, max_length=max_input_length,
                                    lowercase=self.hparams.lowercase, keep="last")  # fmt: skip
        eos, results = self.vocab.eos_index, []
        with evaluating(self):
            for begin in range(0, len(prompt_tokens), batch_size):
                chunk = prompt_tokens[begin : begin + batch_size]
                ids = [[eos, *self.vocab.encode(tokens)] for tokens in chunk]
                context = pad([row[:-1] for row in ids], self.vocab.pad_index)
                first = torch.tensor([row[-1] for row in ids])
                for tokens, hyps in zip(chunk, decode(self, strategy, context, bos_index=first, eos_index=eos,
                                                      **options)):  # fmt: skip
                    results.append([Hypothesis([self.vocab.itos[i] for i in h.tokens], h.score, None, tokens)
                                    for h in hyps])  # fmt: skip
        return results

    def generate(
        self,
        prompts: str | Sequence[str | Sequence[str]] = "",
        beam_size: int = 1,
        n_best: int = 1,
        max_length: int = 100,
        *,
        min_length: int = 0,
        length_penalty: str | None = None,
        alpha: float = 1.0,
        block_ngram_repeat: int = 0,
        batch_size: int = 64,
        max_input_length: int | None = MAX_INPUT_TOKENS,
    ) -> list[list[Hypothesis]]:
        """The most probable continuation of each prompt to the end of its sentence: greedy
        search when ``beam_size == 1`` (and no penalty or blocking), beam search otherwise
        (see :func:`seqlearn.search.beam_search`).

        ``prompts``: a string (tokenized with the model's tokenizer, lowercased first if the
        model is), a token list, or a list of those.  Returns per prompt up to ``n_best``
        :class:`~seqlearn.search.Hypothesis`, best first: ``tokens`` the continuation
        (without ``</s>``), ``score`` its log-probability (``</s>`` included), ``source`` the
        prompt's tokens as read.  ``max_length`` counts steps, ``</s>`` included.

        Prompts as :mod:`seqlearn.inputs` reads them: a token the vocabulary does not know
        is read as ``<unk>`` (``source`` keeps it as given).  An empty or whitespace-only
        prompt -- ``""``, the default -- has no tokens: the continuation is a new sentence
        from scratch, whatever the tokenizer.  A prompt longer than ``max_input_length``
        tokens (default :data:`~seqlearn.inputs.MAX_INPUT_TOKENS`, 512; None for no limit)
        keeps its *last* that many, the context the continuation follows, with a
        :class:`~seqlearn.errors.TruncationWarning`.  ``None``, numbers, bytes or token
        lists holding non-strings raise :class:`~seqlearn.errors.InputError`.
        """
        options = {"beam_size": beam_size, "n_best": n_best, "length_penalty": length_penalty, "alpha": alpha,
                   "block_ngram_repeat": block_ngram_repeat}  # fmt: skip
        return self._search(prompts, search.most_probable, batch_size, max_input_length, "generate",
                            max_length=max_length, min_length=min_length, **options)  # fmt: skip

    def sample(
        self,
        prompts: str | Sequence[str | Sequence[str]] = "",
        num_samples: int = 1,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        max_length: int = 100,
        *,
        min_length: int = 0,
        generator: torch.Generator | None = None,
        batch_size: int = 64,
        max_input_length: int | None = MAX_INPUT_TOKENS,
    ) -> list[list[Hypothesis]]:
        """Sampled continuations (see :func:`seqlearn.search.sample`), like :meth:`generate`
        (prompts read the same way); ``num_samples`` per prompt, best score first."""
        return self._search(
            prompts, search.sample, batch_size, max_input_length, "sample", max_length=max_length,
            min_length=min_length, num_samples=num_samples, temperature=temperature, top_k=top_k, top_p=top_p,
            generator=generator,
        )  # fmt: skip
