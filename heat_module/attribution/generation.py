"""Attribution of a generated answer with any method: :func:`attribute_generation` → :class:`GenerationResult`.

Given a prompt (text, token ids, or chat ``messages`` rendered with the tokenizer's own chat template and
``add_generation_prompt=True``) and either a given continuation or ``max_new_tokens`` (greedy, stopping after an EOS
token), the answer y_1..y_T is fixed first; then row t of the T × (n + T) matrix is exactly the method's
``attribute(prefix_t, target=y_t)`` with prefix_t = prompt + y_1..y_{t-1} (teacher forcing). Where that is exact for
the method (HEAT's M and exact I, occlusion, the gate of ``gated:*``) the rows are computed together from the longest
prefix (:mod:`heat_module.attribution.shared_generation`: N masked runs instead of Σ_t (n + t), one captured forward
for every row's gate); every other method makes one call per row. With ``batch_size`` > 1 those rows go through the
method's ``attribute_batch`` as left-padded batches of prefixes (equal to one-by-one up to the round-off of a padded
forward). Every row also gets its step scores from one forward of the whole sequence: P(y_t), the rank of y_t (0 =
argmax) and the entropy (nats) of the next-token distribution.

Chat prompts: template text (role headers, ``<|im_start|>``, a default system turn the template adds) and the
tokenizer's special tokens are flagged in ``GenerationResult.special``; each message is a turn span labelled with its
role, the generation prompt a span ``"generation prompt"`` and the answer a span ``"assistant"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from heat_module.generation_result import GenerationResult
from heat_module.lm.forward import embed, next_token_logits
from heat_module.result import AttributionResult, Cost
from heat_module.words import tokenizer_offsets

Prompt = str | Sequence[int] | torch.Tensor
Messages = Sequence[Mapping[str, str]]


def attribute_generation(
    method: Any,
    prompt: Prompt | Sequence[Prompt] | None = None,
    *,
    messages: Messages | Sequence[Messages] | None = None,
    continuation: str | Sequence[int] | torch.Tensor | Sequence[Any] | None = None,
    max_new_tokens: int | None = None,
    keep_special: bool = False,
    batch_size: int = 1,
    keep_rows: bool = True,
    foil: int | str | None = None,
    share: bool = True,
) -> GenerationResult | list[GenerationResult]:
    """The T × (n + T) attribution matrix of an answer (see the module docstring).

    Args:
        method: an attribution method (an :class:`~heat_module.attribution.base.Attributor`: HEAT, any baseline).
        prompt: a text, (n,) token ids, or a list of these (then a list of results, one per item).
        messages: instead of ``prompt``: chat messages ``[{"role", "content"}, ...]`` (or a list of conversations).
        continuation: the given answer (text tokenised without special tokens, or ids; a list per item for lists);
            ``None`` = generate greedily.
        max_new_tokens: T for a generated answer (≥ 1; the answer stops after EOS).
        keep_special: keep the special / template tokens in normalisation (recorded in ``extra``).
        batch_size: rows per ``attribute_batch`` call (1 = ``attribute`` per row).
        keep_rows: keep every row's :class:`AttributionResult` (its components) in ``result.rows``.
        foil: a contrast token for methods that take one (HEAT): every row explains log P(y_t) − log P(foil).
        share: compute the rows together from the longest prefix where that is exact for the method
            (:mod:`heat_module.attribution.shared_generation`: HEAT's M and exact I, occlusion, the gate of
            ``gated:*``; chosen automatically, ``batch_size`` then unused); ``False`` = one call per row.
    Returns:
        A :class:`GenerationResult` (a list of them for list input, equal to one-by-one calls); ``extra["shared"]``
        says whether the rows were computed together, and ``result.cost`` sums the rows' costs (shared rows carry
        1/T each of the shared work, in forwards of the longest prefix).
    """
    if (prompt is None) == (messages is None):
        raise ValueError("Expected exactly one of prompt or messages, got "
                         f"{'both' if prompt is not None else 'neither'}")
    items = _as_list(prompt, messages)
    if items is not None:
        conts = [None] * len(items) if continuation is None else list(continuation)
        if len(conts) != len(items):
            raise ValueError(f"Expected one continuation per item ({len(items)}), got {len(conts)}")
        key = "prompt" if prompt is not None else "messages"
        return [attribute_generation(method, **{key: item}, continuation=c, max_new_tokens=max_new_tokens,
                                     keep_special=keep_special, batch_size=batch_size, keep_rows=keep_rows, foil=foil,
                                     share=share)
                for item, c in zip(items, conts)]
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"Expected batch_size to be an integer >= 1, got {batch_size!r}")
    tokenizer = method.tokenizer
    if messages is not None:
        prompt_ids, special, spans = render_chat(tokenizer, messages)
        prompt_ids = method.encode(prompt_ids)
    else:
        prompt_ids = method.encode(prompt)
        special = special_mask(tokenizer, prompt_ids.tolist())
        spans = []
    n = prompt_ids.numel()
    if continuation is not None:
        answer = given_answer(method, continuation)
    else:
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"Expected max_new_tokens to be an integer >= 1 (or a continuation), got "
                             f"{max_new_tokens!r}")
        answer = greedy_answer(method, prompt_ids, max_new_tokens)
    full = torch.cat([prompt_ids, prompt_ids.new_tensor(answer)])
    T = len(answer)
    rows, shared = None, False
    if share and foil is None:
        # imported here: the shared rows use HEAT's components, and HEAT's module imports this package's base
        from heat_module.attribution.shared_generation import shared_rows

        rows = shared_rows(method, full, n)
        shared = rows is not None
    if rows is None:
        rows = attribute_rows(method, full, n, batch_size, foil)
    dtype = torch.float64 if any(r.scores.dtype == torch.float64 for r in rows) else torch.float32
    matrix = torch.full((T, n + T), float("nan"), dtype=dtype)
    cost = Cost()
    for t, r in enumerate(rows):
        if r.scores.numel() != n + t:
            raise ValueError(f"Expected row {t} to have {n + t} scores (prompt and answer so far), got "
                             f"{r.scores.numel()}")
        matrix[t, : n + t] = r.scores.to(dtype)
        cost.add(Cost.from_dict(r.cost))
    if messages is not None:
        spans = [*spans, (n, n + T, "assistant")]
    special = torch.cat([special, special_mask(tokenizer, answer)])
    foil_text = None
    if foil is not None:
        foil_text = rows[0].extra.get("foil", foil if isinstance(foil, str) else None)
    return GenerationResult(
        prompt_ids=prompt_ids.detach().cpu(),
        generated_ids=torch.tensor(answer, dtype=torch.long),
        tokens=method.token_strings(full),
        matrix=matrix,
        step_scores=step_scores(method, full, n),
        special=special,
        spans=spans,
        method=rows[0].method,
        options=dict(rows[0].config),
        foil=foil_text,
        rows=rows if keep_rows else None,
        extra={"cost": cost.to_dict(), "keep_special": bool(keep_special), "generated": continuation is None,
               "batch_size": batch_size, "shared": shared},
    )


def _as_list(prompt: Any, messages: Any) -> list | None:
    """The items of list input, or None for a single prompt / conversation."""
    if messages is not None:
        if messages and not isinstance(messages[0], Mapping):
            return list(messages)
        return None
    if isinstance(prompt, (list, tuple)) and prompt and not isinstance(prompt[0], int):
        return list(prompt)
    return None


def given_answer(method: Any, continuation: str | Sequence[int] | torch.Tensor) -> list[int]:
    """The answer's ids: a text tokenised without special tokens, or given ids (validated)."""
    if isinstance(continuation, str):
        if method.tokenizer is None:
            raise ValueError("Expected a tokenizer to encode a text continuation, got None (pass token ids)")
        ids = list(method.tokenizer(continuation, add_special_tokens=False)["input_ids"])
    else:
        ids = [int(t) for t in torch.as_tensor(continuation).flatten().tolist()]
    if not ids:
        raise ValueError("Expected a continuation of at least one token, got none")
    for t in ids:
        method.target_id(t, None)
    return ids


def eos_ids(method: Any) -> set[int]:
    """The token ids that end a greedy answer (the tokenizer's and the model's generation config's EOS)."""
    out: set[int] = set()
    for value in (getattr(method.tokenizer, "eos_token_id", None),
                  getattr(getattr(method.model, "generation_config", None), "eos_token_id", None)):
        if isinstance(value, int):
            out.add(value)
        elif isinstance(value, (list, tuple)):
            out.update(int(v) for v in value)
    return out


def greedy_answer(method: Any, prompt_ids: torch.Tensor, max_new_tokens: int) -> list[int]:
    """Greedy decoding with the model's own forward over each prefix (no cache, the same forward as the greedy
    target of ``attribute``), at most ``max_new_tokens`` tokens, stopping after an EOS token."""
    stop = eos_ids(method)
    ids = prompt_ids
    answer: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = next_token_logits(method.model, embed(method.model, ids[None]))[0]
            y = int(logits.argmax())
            answer.append(y)
            if y in stop:
                break
            ids = torch.cat([ids, ids.new_tensor([y])])
    return answer


def attribute_rows(method: Any, full: torch.Tensor, n: int, batch_size: int,
                   foil: int | str | None) -> list[AttributionResult]:
    """Row t = ``method.attribute(full[:n+t], target=full[n+t])``; with ``batch_size`` > 1 through
    ``attribute_batch`` on left-padded prefixes."""
    T = full.numel() - n
    if foil is not None or batch_size == 1:
        extra = {} if foil is None else {"foil": foil}
        return [method.attribute(full[: n + t], int(full[n + t]), **extra) for t in range(T)]
    rows: list[AttributionResult] = []
    for start in range(0, T, batch_size):
        steps = range(start, min(start + batch_size, T))
        width = n + steps[-1]
        ids = full.new_zeros(len(steps), width)
        mask = torch.zeros_like(ids)
        for b, t in enumerate(steps):
            ids[b, width - (n + t):] = full[: n + t]
            mask[b, width - (n + t):] = 1
        targets = torch.tensor([int(full[n + t]) for t in steps], dtype=torch.long)
        rows.extend(method.attribute_batch(ids, mask, targets))
    return rows


def step_scores(method: Any, full: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
    """P(y_t), rank of y_t (0 = argmax) and entropy (nats) of each step's next-token distribution, from one forward
    of prompt + y_1..y_{T-1}: each (T,)."""
    T = full.numel() - n
    with torch.no_grad():
        logits = method.model(input_ids=full[None, : n + T - 1], use_cache=False).logits[0, n - 1:]
    logits = logits.double()
    logp = torch.log_softmax(logits, dim=-1)
    y = full[n:].to(logits.device)
    chosen = logits.gather(1, y[:, None])[:, 0]
    return {
        "probability": logp.gather(1, y[:, None])[:, 0].exp().float().cpu(),
        "rank": (logits > chosen[:, None]).sum(1).cpu(),
        "entropy": (-(logp.exp() * logp).sum(1)).float().cpu(),
    }


def special_mask(tokenizer: Any, ids: Sequence[int]) -> torch.Tensor:
    """(len(ids),) True for the tokenizer's special tokens (BOS, EOS, chat markers)."""
    specials = set(getattr(tokenizer, "all_special_ids", []) or []) if tokenizer is not None else set()
    return torch.tensor([int(i) in specials for i in ids], dtype=torch.bool)


def render_chat(tokenizer: Any, messages: Messages) -> tuple[list[int], torch.Tensor, list[tuple[int, int, str]]]:
    """Chat messages as the tokenizer's own template renders them with ``add_generation_prompt=True``.

    Returns:
        The ids (exactly ``tokenizer.apply_chat_template(messages, add_generation_prompt=True)``), the (n,) special
        flags (special tokens and every token outside the messages' contents: the template's text) and the turn
        spans ``(start, end, role)`` (each message's turn up to the next one's; the last span
        ``"generation prompt"`` is the header the template adds for the answer).
    """
    if tokenizer is None or getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("Expected a tokenizer with a chat template for messages, got "
                         f"{'no tokenizer' if tokenizer is None else 'a tokenizer without chat_template'}")
    for k, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise ValueError(f"Expected message {k} to be a dict with 'role' and 'content', got {m!r}")
    ids = [int(i) for i in _chat_ids(tokenizer, messages, True)]
    bounds = [0]
    for k in range(1, len(messages) + 1):
        part = _chat_ids(tokenizer, messages[:k], False)
        if list(part) != ids[: len(part)]:
            raise ValueError(f"Expected the template of the first {k} messages to be a prefix of the whole chat, "
                             "got a template that renders earlier turns differently; pass the rendered text as prompt")
        bounds.append(len(part))
    marks = special_mask(tokenizer, ids)
    content, firsts = content_tokens(tokenizer, messages, ids)
    spans = []
    for k in range(len(messages)):
        a, b = bounds[k], bounds[k + 1]
        if b <= a:
            continue
        start = a
        if firsts[k] is not None:  # a turn the template adds itself (a default system prompt) before this one
            opened = [i for i in range(a, min(firsts[k], b)) if marks[i]]
            if opened and opened[-1] > a and not content[a:opened[-1]].any():
                start = opened[-1]
                spans.append((a, start, "template"))
        spans.append((start, b, str(messages[k]["role"])))
    if bounds[-1] < len(ids):
        spans.append((bounds[-1], len(ids), "generation prompt"))
    return ids, marks | ~content, spans


def _chat_ids(tokenizer: Any, messages: Messages, add_generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(list(messages), add_generation_prompt=add_generation_prompt, tokenize=True)
    if isinstance(out, Mapping):  # some tokenizers return a BatchEncoding
        out = out["input_ids"]
    return list(out)


def content_tokens(tokenizer: Any, messages: Messages, ids: list[int]) -> tuple[torch.Tensor, list[int | None]]:
    """(n,) True for the tokens whose characters lie in a message's content (the rest is template text), and each
    message's first content token (None when not found).

    The rendered text is re-tokenised with offsets (without adding special tokens); when that does not give the same
    ids, only the special tokens can be told apart and every other token counts as content."""
    unknown = (torch.ones(len(ids), dtype=torch.bool), [None] * len(messages))
    text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    offsets = tokenizer_offsets(tokenizer, text, ids)
    if offsets is None:
        return unknown
    ranges: list[tuple[int, int] | None] = []
    pos = 0
    for m in messages:
        content = str(m["content"])
        at = text.find(content, pos) if content else -1
        ranges.append((at, at + len(content)) if at >= 0 else None)
        if at >= 0:
            pos = at + len(content)
    mask = torch.tensor([any(r is not None and a < r[1] and r[0] < b for r in ranges) for a, b in offsets],
                        dtype=torch.bool)
    firsts = [None if r is None else next((i for i, (a, b) in enumerate(offsets) if a < r[1] and r[0] < b), None)
              for r in ranges]
    return mask, firsts
