"""A spaCy pipeline component that runs a trained :class:`~seqlearn.Tagger`.

seqlearn declares the factory as a ``spacy_factories`` entry point, so spaCy finds it
without an import::

    nlp = spacy.blank("en")
    nlp.add_pipe("seqlearn_tagger", config={"model": "runs/conll2003_ner/.../best.ckpt"})
    doc = nlp("EU rejects German call to boycott British lamb .")
    [(e.text, e.label_) for e in doc.ents]        # an NER model sets doc.ents
    [t._.seqlearn_confidence for t in doc]         # the model's probability of each tag

What is set depends on ``attribute``: ``"ents"`` (spans of a chunking model, for which
the default ``"auto"`` decides), ``"pos"`` (``token.pos_``; the tags must be Universal
POS tags, as a UD UPOS model's are) or ``"tag"`` (``token.tag_``, any tag set).  With
``"auto"`` a model with a chunk scheme sets ``ents``, one whose tags are all UPOS sets
``pos``, and any other sets ``tag``.  Whitespace tokens are not shown to the model.
A ``Doc`` is tagged whole, however long (no :data:`~seqlearn.inputs.MAX_INPUT_TOKENS`
truncation: a tagger's cost grows only linearly with length).
"""
from __future__ import annotations

from typing import Iterable, Iterator

from spacy.language import Language
from spacy.parts_of_speech import IDS as UPOS_IDS
from spacy.tokens import Doc, Span, Token

from .errors import ConfigError
from .tagger import Tagger

ATTRIBUTES = ("auto", "ents", "pos", "tag")

if not Token.has_extension("seqlearn_confidence"):
    Token.set_extension("seqlearn_confidence", default=None)


class TaggerComponent:
    """Tags each ``Doc`` with a :class:`~seqlearn.Tagger` (see the module docstring)."""

    def __init__(self, tagger: Tagger, attribute: str = "auto", batch_size: int = 64):
        if attribute not in ATTRIBUTES:
            raise ConfigError(f"attribute must be one of {', '.join(ATTRIBUTES)}; got {attribute!r}")
        if attribute == "auto":
            attribute = "ents" if tagger.scheme is not None else "pos" if set(tagger.tag_names) <= set(UPOS_IDS) else "tag"
        if attribute == "ents" and tagger.scheme is None:
            raise ConfigError("attribute 'ents' needs a tagger trained with a chunk scheme (BIO, IOB1, BIOUL...)")
        if attribute == "pos" and not set(tagger.tag_names) <= set(UPOS_IDS):
            bad = sorted(set(tagger.tag_names) - set(UPOS_IDS))[:5]
            raise ConfigError(f"attribute 'pos' needs Universal POS tags, but the tagger has {bad}; use 'tag'")
        self.tagger = tagger.eval()
        self.attribute = attribute
        self.batch_size = batch_size

    def __call__(self, doc: Doc) -> Doc:
        return next(self.pipe([doc]))

    def pipe(self, docs: Iterable[Doc], batch_size: int | None = None) -> Iterator[Doc]:
        size = batch_size or self.batch_size
        batch: list[Doc] = []
        for doc in docs:
            batch.append(doc)
            if len(batch) == size:
                yield from self._tag(batch)
                batch = []
        yield from self._tag(batch)

    def _tag(self, docs: list[Doc]) -> list[Doc]:
        positions = [[t.i for t in doc if not t.is_space] for doc in docs]
        results = self.tagger.predict([[doc[i].text for i in pos] for doc, pos in zip(docs, positions)],
                                      max_input_length=None)
        for doc, pos, result in zip(docs, positions, results):
            for i, tag, confidence in zip(pos, result.tags, result.confidence):
                doc[i]._.seqlearn_confidence = confidence
                if self.attribute == "pos":
                    doc[i].pos_ = tag
                elif self.attribute == "tag":
                    doc[i].tag_ = tag
            if self.attribute == "ents":
                doc.ents = [Span(doc, pos[s.start], pos[s.end - 1] + 1, label=s.type) for s in result.spans]
        return docs


@Language.factory(
    "seqlearn_tagger",
    default_config={"model": None, "attribute": "auto", "batch_size": 64, "device": "cpu"},
)
def make_tagger_component(
    nlp: Language, name: str, model: str | None, attribute: str, batch_size: int, device: str
) -> TaggerComponent:
    """spaCy factory: ``model`` is the path of a Tagger checkpoint."""
    if model is None:
        raise ConfigError("the seqlearn_tagger component needs config={'model': 'path/to/tagger.ckpt'}")
    return TaggerComponent(Tagger.load_from_checkpoint(model, map_location=device), attribute, batch_size)
