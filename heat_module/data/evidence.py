"""A generated benchmark whose evidence is known by construction: seeded prompts, each with the character spans of
the sentence(s) that determine its answer.

Four kinds (:data:`KINDS`), each a short text that ends where the answer word should follow:

- ``key_value`` — retrieval among look-alike facts: "Ben's cat is called Max. Anna's cat is called Tiger. Carl's
  cat is called Luna. Anna's cat is called" → " Tiger". Evidence: the target fact.
- ``multi_hop`` — two facts chained through a city: "Anna lives in Paris. Rome is in Italy. Ben lives in Rome.
  Paris is in France. So Anna lives in the country of" → " France". Evidence: both facts of the chain.
- ``coreference`` — a pronoun resolved by gender among distractors: "Anna and Tom went to the park. Tom brought a
  box. Anna brought a jar. It was a sunny day. Later, she opened the" → " jar". Evidence: the referent's sentence.
- ``planted`` — the answer word planted early in a long filler: "My favourite fruit is mango. <4–8 filler
  sentences> As I said, my favourite fruit is" → " mango". Evidence: the first sentence.

Every item records ``evidence`` (the supporting sentences without their full stop), ``answer_spans`` (the answer
word inside them) and ``query`` (the final, templated sentence that asks), all as ``(start, end)`` character
offsets into ``text`` (end exclusive). :func:`evidence_tokens` maps them to token positions for a tokenizer with
offsets; :func:`to_example` makes a :class:`~heat_module.data.collate.Example` whose gold tokens are the evidence.
:func:`generate_evidence_items` is pure Python and depends only on its seed. :func:`keep_answered` keeps the items a
model answers right (its greedy next tokens are the answer's tokens), so attribution explains a correct
prediction.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from heat_module.data.collate import Example, char_spans_to_tokens, continuation_ids

Span = tuple[int, int]
KINDS = ("key_value", "multi_hop", "coreference", "planted")

WOMEN = ("Anna", "Maria", "Julia", "Emma", "Sofia", "Clara", "Laura", "Nina", "Rosa", "Alice", "Helen", "Sarah")
MEN = ("Tom", "Ben", "Carl", "David", "Peter", "Mark", "Paul", "Jack", "Leo", "Oscar", "Frank", "Henry")
PET_NAMES = ("Tiger", "Max", "Luna", "Bella", "Rocky", "Daisy", "Lucky", "Milo", "Coco", "Ruby", "Buddy", "Simba")
ANIMALS = ("cat", "dog", "horse", "parrot", "rabbit")
CITIES = (("Paris", "France"), ("Rome", "Italy"), ("Madrid", "Spain"), ("Berlin", "Germany"), ("Tokyo", "Japan"),
          ("Cairo", "Egypt"), ("Lima", "Peru"), ("Oslo", "Norway"), ("Athens", "Greece"), ("Lisbon", "Portugal"),
          ("Dublin", "Ireland"), ("Vienna", "Austria"), ("Warsaw", "Poland"), ("Ottawa", "Canada"))
PLACES = ("park", "beach", "market", "station", "library", "lake")
OBJECTS = ("box", "jar", "bag", "book", "letter", "basket", "parcel", "bottle", "umbrella", "laptop")
PLANTED = (("My favourite fruit is", ("mango", "banana", "apple", "cherry", "peach", "lemon", "melon")),
           ("My favourite colour is", ("green", "blue", "red", "yellow", "purple", "orange")),
           ("The name of our dog is", ("Max", "Rocky", "Bella", "Buddy", "Charlie", "Daisy")),
           ("My best friend is called", ("Anna", "Julia", "Peter", "Mark", "Laura", "Oscar")))
FILLER = (
    "The weather was nice and we walked along the river for a long time.",
    "We talked about books, films and music.",
    "Then we went home and had dinner together.",
    "The train was late again, so we waited on the platform.",
    "In the afternoon it started to rain a little.",
    "Someone had left a newspaper on the bench.",
    "The shop on the corner was closed for the holidays.",
    "We drank coffee and watched the people pass by.",
    "A small boat moved slowly across the water.",
    "The children were playing football in the street.",
    "Later that evening the wind became stronger.",
    "We bought some bread and cheese for the trip.",
)


@dataclass(frozen=True)
class EvidenceItem:
    """One generated prompt with its evidence.

    Attributes:
        id: ``"<kind>-<index>"``, unique within one generated list.
        kind: one of :data:`KINDS`.
        text: the prompt; the answer follows it directly (``text + answer`` is the full sentence).
        answer: the expected continuation with its leading space (``" Tiger"``).
        evidence: character spans of the supporting sentence(s), full stop excluded, in text order.
        answer_spans: character spans of the answer word inside the evidence.
        query: character span(s) of the final sentence that asks for the answer.
    """

    id: str
    kind: str
    text: str
    answer: str
    evidence: tuple[Span, ...]
    answer_spans: tuple[Span, ...]
    query: tuple[Span, ...]
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("evidence", "answer_spans", "query"):
            for start, end in getattr(self, name):
                if not 0 <= start < end <= len(self.text):
                    raise ValueError(f"Expected {name} spans inside the text of length {len(self.text)}, got "
                                     f"{(start, end)} in item {self.id!r}")


class _Builder:
    """Appends sentences separated by one space and remembers where each one is."""

    def __init__(self) -> None:
        self.text = ""

    def add(self, sentence: str) -> Span:
        """Append ``sentence``; its span without a final full stop."""
        if self.text:
            self.text += " "
        start = len(self.text)
        self.text += sentence
        return (start, len(self.text) - (1 if sentence.endswith(".") else 0))

    def find(self, word: str, within: Span) -> Span:
        """The span of the last whole-word occurrence of ``word`` inside ``within``."""
        start = self.text.rfind(" " + word, within[0], within[1]) + 1
        if start == 0 and not self.text.startswith(word, within[0]):
            raise ValueError(f"Expected {word!r} inside {self.text[within[0]:within[1]]!r}, got no occurrence")
        if start == 0:
            start = within[0]
        return (start, start + len(word))


def _key_value(rng: random.Random) -> tuple[_Builder, str, list[Span], list[Span], Span]:
    animal = rng.choice(ANIMALS)
    owners = rng.sample(WOMEN + MEN, rng.randint(2, 4))
    pets = rng.sample(PET_NAMES, len(owners))
    target = rng.randrange(len(owners))
    b = _Builder()
    spans = [b.add(f"{owner}'s {animal} is called {pet}.") for owner, pet in zip(owners, pets)]
    query = b.add(f"{owners[target]}'s {animal} is called")
    return b, pets[target], [spans[target]], [b.find(pets[target], spans[target])], query


def _multi_hop(rng: random.Random) -> tuple[_Builder, str, list[Span], list[Span], Span]:
    (city, country), (city2, country2) = rng.sample(CITIES, 2)
    person, other = rng.sample(WOMEN + MEN, 2)
    facts = [("live", f"{person} lives in {city}."), ("in", f"{city} is in {country}."),
             ("other_live", f"{other} lives in {city2}."), ("other_in", f"{city2} is in {country2}.")]
    while True:  # the chain's second fact never comes right before the query
        rng.shuffle(facts)
        if facts[-1][0] != "in":
            break
    b = _Builder()
    spans = {name: b.add(sentence) for name, sentence in facts}
    query = b.add(f"So {person} lives in the country of")
    evidence = sorted([spans["live"], spans["in"]])
    return b, country, evidence, [b.find(country, spans["in"])], query


def _coreference(rng: random.Random) -> tuple[_Builder, str, list[Span], list[Span], Span]:
    woman, man = rng.choice(WOMEN), rng.choice(MEN)
    obj_w, obj_m = rng.sample(OBJECTS, 2)
    referent_is_woman = rng.random() < 0.5
    b = _Builder()
    first = [woman, man] if rng.random() < 0.5 else [man, woman]
    b.add(f"{first[0]} and {first[1]} went to the {rng.choice(PLACES)}.")
    order = [(woman, obj_w), (man, obj_m)]
    rng.shuffle(order)
    spans = {who: b.add(f"{who} brought {'an' if obj[0] in 'aeiou' else 'a'} {obj}.") for who, obj in order}
    for sentence in rng.sample(FILLER, rng.randint(0, 2)):
        b.add(sentence)
    pronoun, referent, answer = ("she", woman, obj_w) if referent_is_woman else ("he", man, obj_m)
    query = b.add(f"Later, {pronoun} opened the")
    return b, answer, [spans[referent]], [b.find(answer, spans[referent])], query


def _planted(rng: random.Random) -> tuple[_Builder, str, list[Span], list[Span], Span]:
    stem, words = rng.choice(PLANTED)
    word = rng.choice(words)
    b = _Builder()
    fact = b.add(f"{stem} {word}.")
    for sentence in rng.sample(FILLER, rng.randint(4, 8)):
        b.add(sentence)
    query = b.add(f"As I said, {stem[0].lower()}{stem[1:]}")
    return b, word, [fact], [b.find(word, fact)], query


_MAKERS: dict[str, Callable[[random.Random], tuple[_Builder, str, list[Span], list[Span], Span]]] = {
    "key_value": _key_value, "multi_hop": _multi_hop, "coreference": _coreference, "planted": _planted,
}


def generate_evidence_items(n: int, seed: int = 0, kinds: Sequence[str] = KINDS) -> list[EvidenceItem]:
    """``n`` items cycling through ``kinds`` (item i has kind ``kinds[i % len(kinds)]``), from ``random.Random(seed)``.

    The same ``(n, seed, kinds)`` always gives the same items, and the first m items of a longer list equal the
    items of ``n = m`` (each item draws from its own generator seeded by ``(seed, i)``).
    """
    if n < 0:
        raise ValueError(f"Expected n >= 0, got {n}")
    bad = [k for k in kinds if k not in _MAKERS]
    if bad or not kinds:
        raise ValueError(f"Expected kinds from {list(KINDS)}, got {list(kinds)}")
    items = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        rng = random.Random(f"{seed}:{i}")
        b, answer, evidence, answer_spans, query = _MAKERS[kind](rng)
        items.append(EvidenceItem(f"{kind}-{i}", kind, b.text, " " + answer, tuple(evidence), tuple(answer_spans),
                                  (query,), {"seed": seed, "index": i}))
    return items


def evidence_tokens(item: EvidenceItem, tokenizer: Any) -> dict[str, list[int]]:
    """Token positions of ``item.text`` (tokenizer defaults, as ``HEAT.attribute(text)`` encodes it) that overlap
    the evidence, the answer word and the query: ``{"input_ids", "evidence", "answer", "query"}``.

    Args:
        tokenizer: a fast tokenizer (``return_offsets_mapping`` is required).
    """
    enc = tokenizer(item.text, return_offsets_mapping=True)
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    return {"input_ids": list(enc["input_ids"]),
            "evidence": char_spans_to_tokens(offsets, item.evidence),
            "answer": char_spans_to_tokens(offsets, item.answer_spans),
            "query": char_spans_to_tokens(offsets, item.query)}


def to_example(item: EvidenceItem, tokenizer: Any) -> Example:
    """An :class:`Example` with target = the answer's first token, gold = the evidence tokens; the answer-word and
    query token positions go into ``metadata`` (``"answer_tokens"``, ``"query_tokens"``)."""
    tokens = evidence_tokens(item, tokenizer)
    answer_ids = continuation_ids(tokenizer, item.text, item.answer)
    return Example(item.id, tokens["input_ids"], answer_ids[0], tokens["evidence"], None,
                   {"kind": item.kind, "text": item.text, "answer": item.answer, "answer_ids": answer_ids,
                    "answer_tokens": tokens["answer"], "query_tokens": tokens["query"]})


def keep_answered(items: Sequence[EvidenceItem], model: Any, tokenizer: Any) -> list[EvidenceItem]:
    """The items whose answer ``model`` produces greedily: its next ``len(answer tokens)`` greedy tokens after
    ``item.text`` (encoded as :func:`evidence_tokens` does) are exactly the answer's tokens.

    Args:
        model: a causal LM returning ``.logits`` (batch, n, V) from ``model(input_ids=...)``.
        tokenizer: the model's tokenizer.
    """
    import torch  # lazy: the generator itself is plain Python

    device = next(iter(model.parameters())).device if hasattr(model, "parameters") else "cpu"
    kept = []
    for item in items:
        ids = list(tokenizer(item.text)["input_ids"])
        want = continuation_ids(tokenizer, item.text, item.answer)
        got = []
        with torch.no_grad():
            for _ in want:
                logits = model(input_ids=torch.tensor([ids + got], device=device)).logits[0, -1]
                got.append(int(logits.argmax()))
        if got == want:
            kept.append(item)
    return kept
