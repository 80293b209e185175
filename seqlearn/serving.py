"""Serve models exported by :mod:`seqlearn.export` with torch or onnxruntime alone.

This file imports nothing from seqlearn (nor Lightning): copy it next to the exported
folder and serve from there.  A folder holds ``manifest.json``, the graphs
(``*.pt`` TorchScript or ``*.onnx``) and the vocabularies as JSON::

    from seqlearn.serving import load

    translator = load("exported/")                  # Seq2Seq: greedy decoding
    translator.translate(["a b c", ["d", "e"]])     # [['x', 'y'], ['z']]
    tagger = load("tagger-exported/")               # Tagger: Viterbi or argmax
    tagger.tag([["EU", "rejects", "German", "call"]])
    lm = load("lm-exported/")                       # LanguageModel: greedy continuation
    lm.generate(["a dog", ""], max_length=20)        # [['runs', '.'], ['a', 'man', ...]]
    classifier = load("classifier-exported/")       # SequenceClassifier
    classifier.classify(["what a lovely film"])[0]  # Classification(tokens=[...], labels=['pos'],
                                                    #   probabilities={'pos': 0.97, 'neg': 0.03})

or from a shell, one input per line: ``python serving.py exported/ < sentences.txt``
(a translation, tags, a continuation or labels per line).

Strings are split on whitespace; a model trained with another tokenizer (the manifest
names it) takes token lists, except a subword model: its SentencePiece models are
exported beside it (``src_tokenizer.model``, ``tgt_tokenizer.model``) and, with the
``sentencepiece`` package installed, tokenize strings and detokenize output
(:meth:`ExportedSeq2Seq.detokenize`).  Greedy decoding written out, as a server in another
language would (``graph`` runs one exported graph on named tensors)::

    state = encoder(src_ids=ids, src_lengths=lengths)         # the decoder's initial state
    prev = [<s>] * batch
    for t in range(max_length):
        out = step(prev_tokens=prev, **state)                   # log_probs, next.<carried>, attention
        prev = out["log_probs"].argmax(-1)                      # a row is done once it gave </s>
        state.update({name: out["next." + name] for name in carried})

A language model exports its step alone: its state starts at zeros
(:meth:`ExportedLanguageModel.init_state`, sizes in the manifest's ``state.zeros``) and
reads the prompt ``</s> w1 ... wn`` through the same step, ``wn`` being the first token
fed to the greedy loop.

:meth:`ExportedSeq2Seq.start`/:meth:`~ExportedSeq2Seq.search_step` and
:meth:`ExportedLanguageModel.start`/:meth:`~ExportedLanguageModel.search_step` follow the
search protocol of :mod:`seqlearn.search` (a dict state with the batch in dim 0; ``step``
is the same method under its 0.1.0 name), so
``seqlearn.search.beam_search(model.search_step, model.start(ids, lengths), ...)`` runs
beam search over the exported graphs too.
"""
from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import torch

FORMAT = "seqlearn.export/1"
MANIFEST = "manifest.json"

State = dict[str, torch.Tensor]


class Graph:
    """One exported graph, called with named tensors; returns its outputs by name.

    ``backend`` ``"torchscript"`` (``torch.jit.load``) or ``"onnx"`` (an onnxruntime
    session on the CPU).  ONNX graphs leave out inputs they do not read; those are
    simply not fed.
    """

    def __init__(self, path: str | os.PathLike, backend: str, inputs: Sequence[str], outputs: Sequence[str]):
        self.path, self.backend = Path(path), backend
        self.inputs, self.outputs = list(inputs), list(outputs)
        if backend == "torchscript":
            with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript, which it still runs
                warnings.simplefilter("ignore", DeprecationWarning)
                self._module = torch.jit.load(str(self.path), map_location="cpu")
        elif backend == "onnx":
            import onnxruntime

            self._session = onnxruntime.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
            self._fed = [i.name for i in self._session.get_inputs()]
        else:
            raise ValueError(f"{self.path}: unknown backend {backend!r} (torchscript or onnx)")

    def __call__(self, **tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        missing = [name for name in self.inputs if name not in tensors]
        if missing:
            raise ValueError(f"{self.path.name}: missing inputs {missing}")
        if self.backend == "torchscript":
            with torch.no_grad():
                out = self._module(*(tensors[name] for name in self.inputs))
            out = out if isinstance(out, tuple) else (out,)
        else:
            feed = {name: tensors[name].detach().cpu().numpy() for name in self._fed}
            out = tuple(torch.from_numpy(x) for x in self._session.run(self.outputs, feed))
        return dict(zip(self.outputs, out))


class Vocabulary:
    """A vocabulary from its ``seqlearn.vocab/1`` JSON: ``itos``, ``stoi``, special indices."""

    def __init__(self, path: str | os.PathLike):
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        self.itos: list[str] = data["itos"]
        self.specials: list[str] = data["specials"]
        self.stoi = {token: i for i, token in enumerate(self.itos)}

    def special(self, token: str) -> int | None:
        return self.stoi[token] if token in self.specials else None

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Token ids; unknown tokens become ``<unk>`` (a vocabulary without one raises KeyError)."""
        unk = self.special("<unk>")
        return [self.stoi[t] if t in self.stoi or unk is None else unk for t in tokens]


def pad(rows: Sequence[Sequence[int]], pad_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids ``(batch, max_len)`` and lengths ``(batch,)``."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    ids = torch.full((len(rows), int(lengths.max()) if rows else 0), pad_index, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return ids, lengths


class _Exported:
    """What every exported model has: its folder, manifest, graphs and vocabularies."""

    def __init__(self, directory: str | os.PathLike, manifest: dict[str, Any]):
        self.directory, self.manifest = Path(directory), manifest
        backend = manifest["backend"]
        self.graphs = {
            name: Graph(self.directory / g["file"], backend, g["inputs"], g["outputs"])
            for name, g in manifest["graphs"].items()
        }
        self.vocabs = {name: Vocabulary(self.directory / file) for name, file in manifest["vocabs"].items()}

    def _sentencepiece(self, side: str) -> Any:
        """The SentencePiece processor of ``side`` exported with the model, or None."""
        file = self.manifest.get("tokenizer_models", {}).get(side)
        if file is None:
            return None
        import sentencepiece  # only models trained on subwords need it

        return sentencepiece.SentencePieceProcessor(model_file=str(self.directory / file))

    def _tokens(self, inputs: Sequence[str | Sequence[str]], lowercase: bool = False) -> list[list[str]]:
        tokenizer = self.manifest.get("tokenizer", "whitespace")
        pieces = self._sentencepiece("src")
        if pieces is not None:
            return [pieces.encode(x, out_type=str) if isinstance(x, str) else list(x) for x in inputs]
        if any(isinstance(x, str) for x in inputs) and tokenizer != "whitespace":
            raise ValueError(f"this model was trained on {tokenizer!r} tokens: pass token lists, not strings")
        token_lists = [x.split() if isinstance(x, str) else list(x) for x in inputs]
        return [[t.lower() for t in tokens] for tokens in token_lists] if lowercase else token_lists


Step = Callable[[torch.Tensor, State], tuple[torch.Tensor, State, Any]]


def greedy_decode(step: Step, state: State, first: torch.Tensor, eos: int, max_length: int) -> list[list[int]]:
    """The most probable token at each step of ``step`` (search protocol) from ``state``,
    fed ``first`` ``(batch,)`` first, for ``max_length`` steps at most; each row's ids stop
    before its ``</s>`` (``eos``)."""
    prev = first
    done = torch.zeros(first.size(0), dtype=torch.bool)
    steps = []
    for _ in range(max_length):
        log_probs, state, _ = step(prev, state)
        # a finished row keeps running (rows are independent) but only ever repeats </s>
        prev = log_probs.argmax(-1).masked_fill(done, eos)
        steps.append(prev)
        done |= prev == eos
        if bool(done.all()):
            break
    rows = torch.stack(steps, 1).tolist() if steps else [[] for _ in range(first.size(0))]
    return [row[: row.index(eos)] if eos in row else row for row in rows]


class _Stepping(_Exported):
    """An exported model with a ``step`` graph under the search protocol of :mod:`seqlearn.search`
    (``start`` and ``search_step``, as ``seqlearn.protocols.SearchModel``)."""

    def __init__(self, directory: str | os.PathLike, manifest: dict[str, Any]):
        super().__init__(directory, manifest)
        self.carried: list[str] = manifest["state"]["carried"]

    def search_step(self, prev_tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State, torch.Tensor | None]:
        """Search protocol: log-probabilities ``(N, V)`` of the token after ``prev_tokens``
        ``(N,)``, the new state, and the attention ``(N, src_len)`` (None without attention)."""
        out = self.graphs["step"](prev_tokens=prev_tokens, **state)
        return out["log_probs"], {**state, **{name: out[f"next.{name}"] for name in self.carried}}, out.get("attention")

    #: the name seqlearn 0.1.0 served :meth:`search_step` under
    step = search_step


class ExportedSeq2Seq(_Stepping):
    """An exported :class:`seqlearn.Seq2Seq`: graphs ``encoder`` and ``step``."""

    def __init__(self, directory: str | os.PathLike, manifest: dict[str, Any]):
        super().__init__(directory, manifest)
        self.src, self.tgt = self.vocabs["src"], self.vocabs["tgt"]
        # exports before these keys: a native model, </s> after every source, built-in search
        self.src_eos: bool = manifest.get("src_eos", True)
        self.search_defaults: dict[str, Any] = manifest.get("search_defaults", {})

    def start(self, src_ids: torch.Tensor, src_lengths: torch.Tensor) -> State:
        """The decoder's initial state for source ids ``(batch, src_len)`` with lengths
        ``(batch,)``; each row ends in ``</s>`` unless :attr:`src_eos` is false (a model
        converted from OpenNMT-py)."""
        return self.graphs["encoder"](src_ids=src_ids, src_lengths=src_lengths)

    def detokenize(self, tokens: Sequence[str]) -> str:
        """Output tokens as text: joined by the exported SentencePiece model, else by spaces."""
        pieces = self._sentencepiece("tgt")
        return " ".join(tokens) if pieces is None else pieces.decode_pieces(list(tokens))

    def greedy(self, src_ids: torch.Tensor, src_lengths: torch.Tensor, max_length: int) -> list[list[int]]:
        """The most probable token at each step, for ``max_length`` steps at most; each row's
        ids stop before its ``</s>``."""
        first = torch.full((src_ids.size(0),), self.tgt.special("<s>"), dtype=torch.long)
        return greedy_decode(self.search_step, self.start(src_ids, src_lengths), first, self.tgt.special("</s>"),
                             max_length)

    def translate(self, inputs: Sequence[str | Sequence[str]], max_length: int | None = None) -> list[list[str]]:
        """Greedy translations (token lists) of sentences or token lists, as
        ``Seq2Seq.translate(beam_size=1, length_penalty=None)``; ``max_length`` steps by
        default ``max(100, 2 * longest source + 10)``, ``</s>`` counted.  The search rules
        of a converted model's tool (:attr:`search_defaults`: length penalty, stopping,
        max-length rule) are for beam search over :meth:`search_step`; greedy ignores them."""
        token_lists = self._tokens(inputs)
        results: list[list[str]] = [[] for _ in token_lists]
        todo = [i for i, tokens in enumerate(token_lists) if tokens]  # empty in, empty out
        if not todo:
            return results
        eos = self.src.special("</s>")
        ids, lengths = pad([self.src.encode(token_lists[i]) + [eos] * self.src_eos for i in todo],
                           self.src.special("<pad>"))
        max_length = max_length or max(100, 2 * int(lengths.max()) + 10)
        for i, row in zip(todo, self.greedy(ids, lengths, max_length)):
            results[i] = [self.tgt.itos[t] for t in row]
        return results


class ExportedTagger(_Exported):
    """An exported :class:`seqlearn.Tagger`: graph ``emissions``, and ``viterbi`` for a CRF head."""

    def __init__(self, directory: str | os.PathLike, manifest: dict[str, Any]):
        super().__init__(directory, manifest)
        self.tag_names: list[str] = manifest["tag_names"]

    def inputs(self, token_lists: Sequence[Sequence[str]]) -> dict[str, torch.Tensor]:
        """The emission graph's inputs: ``word_ids`` and ``lengths``, and ``char_ids``
        ``(batch, len, max_word_len)`` when the tagger reads characters."""
        words = self.vocabs["words"]
        lower = self.manifest["lowercase"]
        word_ids, lengths = pad([words.encode([t.lower() if lower else t for t in s]) for s in token_lists],
                                words.special("<pad>"))
        tensors = {"word_ids": word_ids, "lengths": lengths}
        if "chars" in self.vocabs:
            chars = self.vocabs["chars"]
            width = max(len(t) for s in token_lists for t in s)
            char_ids = torch.full((*word_ids.shape, width), chars.special("<pad>"), dtype=torch.long)
            for i, sentence in enumerate(token_lists):
                for j, token in enumerate(sentence):
                    char_ids[i, j, : len(token)] = torch.tensor(chars.encode(list(token)), dtype=torch.long)
            tensors["char_ids"] = char_ids
        return tensors

    def tag(self, inputs: Sequence[str | Sequence[str]]) -> list[list[str]]:
        """Tags of sentences or token lists: the CRF's Viterbi path, or each token's argmax."""
        token_lists = self._tokens(inputs)
        results: list[list[str]] = [[] for _ in token_lists]
        todo = [i for i, tokens in enumerate(token_lists) if tokens]
        if not todo:
            return results
        tensors = self.inputs([token_lists[i] for i in todo])
        emissions = self.graphs["emissions"](**tensors)["emissions"]
        mask = torch.arange(emissions.size(1)) < tensors["lengths"].unsqueeze(1)
        if "viterbi" in self.graphs:
            paths = self.graphs["viterbi"](emissions=emissions, mask=mask)["tags"]
        else:
            paths = emissions.argmax(-1)
        for i, row, n in zip(todo, paths.tolist(), tensors["lengths"].tolist()):
            results[i] = [self.tag_names[k] for k in row[:n]]
        return results


class ExportedCRF(_Exported):
    """An exported :class:`seqlearn.CRF`: graph ``viterbi``."""

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor | None = None) -> list[list[int]]:
        """The best tag path of each sequence, as long as the sequence (like ``CRF.decode``)."""
        if mask is None:
            mask = torch.ones(emissions.shape[:2], dtype=torch.bool)
        tags = self.graphs["viterbi"](emissions=emissions, mask=mask.bool())["tags"]
        return [row[:n] for row, n in zip(tags.tolist(), mask.sum(1).tolist())]


class ExportedLanguageModel(_Stepping):
    """An exported :class:`seqlearn.LanguageModel`: graph ``step`` alone.  The state starts
    at zeros and reads a prompt one token at a time through the step, as the model's
    streaming :meth:`~seqlearn.LanguageModel.step` does (the served ``step`` is the search
    step, as in seqlearn 0.1.0)."""

    def __init__(self, directory: str | os.PathLike, manifest: dict[str, Any]):
        super().__init__(directory, manifest)
        self.vocab = self.vocabs["tokens"]
        self.zeros: dict[str, list[int]] = manifest["state"]["zeros"]

    def init_state(self, batch: int = 1) -> State:
        """The state before the first token of ``batch`` streams: zeros."""
        return {name: torch.zeros(batch, *size) for name, size in self.zeros.items()}

    def start(self, ids: torch.Tensor, lengths: torch.Tensor) -> State:
        """Search protocol: the state after reading each row of ``ids`` ``(batch, len)`` up to
        its length ``(batch,)`` through the step (a row of length 0 keeps the zero state)."""
        state = self.init_state(ids.size(0))
        for t in range(int(lengths.max()) if lengths.numel() else 0):
            _, read, _ = self.search_step(ids[:, t], state)
            reading = t < lengths
            state = {name: torch.where(reading.view(-1, *[1] * (x.dim() - 1)), read[name], x)
                     for name, x in state.items()}
        return state

    def greedy(self, ids: torch.Tensor, lengths: torch.Tensor, max_length: int) -> list[list[int]]:
        """Continue each row of ``ids`` ``(batch, len)`` with lengths ``(batch,)`` (each >= 1):
        read all its tokens but the last, then feed the last and take the most probable token
        at each step, for ``max_length`` steps at most; each row's ids stop before its ``</s>``."""
        last = ids.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)
        return greedy_decode(self.search_step, self.start(ids, lengths - 1), last, self.vocab.special("</s>"),
                             max_length)

    def generate(self, prompts: str | Sequence[str | Sequence[str]] = "", max_length: int = 100) -> list[list[str]]:
        """The greedy continuation (tokens, without ``</s>``) of each prompt to the end of its
        sentence, as ``LanguageModel.generate(prompts, beam_size=1)``: a prompt is a string
        (``""`` starts a new sentence) or a token list, after ``</s>``; ``max_length`` counts
        steps, ``</s>`` included."""
        token_lists = self._tokens([prompts] if isinstance(prompts, str) else prompts, self.manifest["lowercase"])
        eos = self.vocab.special("</s>")
        # padding is never read; a vocabulary without <pad> pads with 0
        ids, lengths = pad([[eos, *self.vocab.encode(tokens)] for tokens in token_lists],
                           self.vocab.special("<pad>") or 0)
        return [[self.vocab.itos[i] for i in row] for row in self.greedy(ids, lengths, max_length)]


class Classification(NamedTuple):
    """A served classifier's answer for one text, as ``SequenceClassifier.predict`` gives it."""

    tokens: list[str]
    labels: list[str]
    probabilities: dict[str, float]


class ExportedClassifier(_Exported):
    """An exported :class:`seqlearn.SequenceClassifier`: graph ``probabilities``."""

    def __init__(self, directory: str | os.PathLike, manifest: dict[str, Any]):
        super().__init__(directory, manifest)
        self.words = self.vocabs["words"]
        self.labels: list[str] = manifest["labels"]

    def classify(self, texts: str | Sequence[str | Sequence[str]], batch_size: int = 64) -> list[Classification]:
        """Label probabilities and predicted labels of each text (a string or a token list;
        a bare string is one text): single-label, the most probable label; multi-label,
        every label above the threshold, most probable first.  A text without tokens
        raises ValueError."""
        token_lists = self._tokens([texts] if isinstance(texts, str) else texts, self.manifest["lowercase"])
        for i, tokens in enumerate(token_lists):
            if not tokens:
                raise ValueError(f"text {i} has no tokens: a classifier needs at least one")
        results = []
        for begin in range(0, len(token_lists), batch_size):
            chunk = token_lists[begin : begin + batch_size]
            word_ids, lengths = pad([self.words.encode(tokens) for tokens in chunk], self.words.special("<pad>"))
            probs = self.graphs["probabilities"](word_ids=word_ids, lengths=lengths)["probabilities"]
            results.extend(self._classification(tokens, p) for tokens, p in zip(chunk, probs))
        return results

    def _classification(self, tokens: list[str], probs: torch.Tensor) -> Classification:
        ranked = probs.argsort(descending=True).tolist()
        if self.manifest["multi_label"]:
            chosen = [self.labels[i] for i in ranked if probs[i] > self.manifest["threshold"]]
        else:
            chosen = [self.labels[ranked[0]]]
        return Classification(tokens, chosen, dict(zip(self.labels, probs.tolist())))


#: manifest "model" -> the class serving it
SERVED = {"seq2seq": ExportedSeq2Seq, "tagger": ExportedTagger, "crf": ExportedCRF,
          "language_model": ExportedLanguageModel, "classifier": ExportedClassifier}


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not a seqlearn export (format {manifest.get('format')!r}, expected {FORMAT!r})")
    return manifest


def load(directory: str | os.PathLike) -> Any:
    """The exported model in ``directory``, served by the class its manifest names."""
    manifest = read_manifest(directory)
    if manifest["model"] not in SERVED:
        raise ValueError(f"{directory}: no server for exported model kind {manifest['model']!r}")
    return SERVED[manifest["model"]](directory, manifest)


def main(argv: Sequence[str] | None = None) -> int:
    """``python serving.py DIRECTORY``: for each line of stdin, one output line: its
    translation, its tags (tab-separated), the continuation of it as a prompt (a language
    model) or its labels (tab-separated; a classifier)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python serving.py EXPORTED_DIRECTORY < lines", file=sys.stderr)
        return 2
    model = load(args[0])
    lines = [line.rstrip("\n") for line in sys.stdin]
    if isinstance(model, ExportedSeq2Seq):
        outputs = [model.detokenize(tokens) for tokens in model.translate(lines)]
    elif isinstance(model, ExportedTagger):
        outputs = ["\t".join(tags) for tags in model.tag(lines)]
    elif isinstance(model, ExportedLanguageModel):
        outputs = [" ".join(tokens) for tokens in model.generate(lines)]
    elif isinstance(model, ExportedClassifier):
        outputs = ["\t".join(result.labels) for result in model.classify(lines)]
    else:
        print(f"{args[0]}: a {model.manifest['model']} export does not read text lines", file=sys.stderr)
        return 2
    for line in outputs:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
