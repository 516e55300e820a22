"""Who answers RecLM-eval's prompts: a local Hugging Face causal LM, an OpenAI-compatible endpoint, chance.

Every backend has an ``identity`` (a string naming the model and every setting that changes its
answers; the answer cache is keyed by it, so another model or setting never reuses an answer),
a ``batch_size`` and ``answer(examples) -> list[Reply]``:

- :class:`HFBackend`: greedy decoding with the model's chat template
  (:class:`genrec.llm.tasks.PromptFormat`), left-padded batches, ``max_new_tokens`` per task
  (:data:`MAX_NEW_TOKENS`). ``model`` is a spec (``bundled:smollm2-135m-instruct``, a folder or a hub
  id; its identity hashes the weight and tokenizer files) or a loaded model plus tokenizer and an
  ``identity`` you choose (e.g. a fine-tuned model in memory). ``generate_kwargs`` go to
  ``model.generate`` (e.g. a constrained-decoding ``logits_processor``).
- :class:`OpenAIBackend`: ``POST <base_url>/chat/completions`` (or ``/completions``) with
  :mod:`urllib`, temperature 0. The API key is read from the environment variable named by
  ``api_key_env`` at call time, never stored. An answer that is not the documented JSON shape is
  returned as a :class:`Reply` with an ``error`` (counted as ``malformed_answer`` and not cached);
  an unreachable or refusing endpoint raises :class:`BackendError` naming the URL and the fix.
- :class:`RandomBackend`: chance, for sanity: ranking answers the candidates in a random order,
  multiple choice a random letter, retrieval random catalogue titles. With 1 target among 20
  candidates its expected HR@5 is 5/20 = 0.25 and NDCG@10 0.2272 (RecAI's "random" row).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from genrec.evaluation.lm_tasks import LETTERS, LMExample

__all__ = ["MAX_NEW_TOKENS", "BackendError", "CallableBackend", "HFBackend", "OpenAIBackend", "RandomBackend",
           "Reply"]

MAX_NEW_TOKENS = {"retrieval": 160, "ranking": 320, "cf_ranking_mc": 8, "seq_ranking_mc": 8}
"""Default answer length in tokens per task: 10 titles, 20 titles (with ``<end>`` marks), a letter."""


class BackendError(RuntimeError):
    """A backend cannot answer at all (unreachable endpoint, refused key, unknown model)."""


@dataclass
class Reply:
    """One answer: its text, or ``text=None`` and the reason in ``error`` (not cached)."""

    text: str | None
    error: str | None = None


class HFBackend:
    """A local causal LM answering by greedy decoding.

    Args:
        model: a spec for :func:`genrec.llm.load_causal_lm` (default: the bundled SmolLM2), or a
            loaded ``PreTrainedModel``.
        tokenizer: its tokenizer (required with a loaded model).
        identity: cache identity (required with a loaded model; default for a spec: ``hf:`` + the
            sha256 of its weight and tokenizer files).
        max_new_tokens: answer length for every task (default: :data:`MAX_NEW_TOKENS` per task).
        batch_size: prompts per ``generate`` call.
        system_prompt: system message of the chat template (``None``: the template's default).
        max_prompt_tokens: longer prompts lose tokens from the left.
        dtype: weights dtype when loading a spec.
        generate_kwargs: extra ``model.generate`` arguments; JSON values are part of the identity,
            other objects (a ``logits_processor``) only by type name, so name what they do in
            ``identity``.
    """

    def __init__(self, model=None, tokenizer=None, identity: str | None = None, max_new_tokens: int | None = None,
                 batch_size: int = 8, system_prompt: str | None = None, max_prompt_tokens: int = 2048,
                 dtype: str = "float32", generate_kwargs: dict | None = None):
        from genrec.llm.pretrained import BUNDLED_LLM, load_causal_lm

        if batch_size < 1 or (max_new_tokens is not None and max_new_tokens < 1):
            raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size} and {max_new_tokens}")
        spec = BUNDLED_LLM if model is None else model
        if isinstance(spec, str):
            from genrec.augment import model_fingerprint

            identity = identity or f"hf:{spec}:{model_fingerprint(spec)[:16]}"
            self.model, self.tokenizer = load_causal_lm(spec, dtype=dtype)
        else:
            if tokenizer is None or not identity:
                raise ValueError("HFBackend with a loaded model needs its tokenizer and an identity string naming "
                                 "the model (the answer cache is keyed by it)")
            self.model, self.tokenizer = spec, tokenizer
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.system_prompt, self.max_prompt_tokens = system_prompt, max_prompt_tokens
        self.generate_kwargs = dict(generate_kwargs or {})
        settings = {"max_new_tokens": max_new_tokens, "system_prompt": system_prompt, "max_prompt": max_prompt_tokens,
                    "generate": {k: _stable(v) for k, v in sorted(self.generate_kwargs.items())}}
        self.identity = f"{identity}|greedy|{json.dumps(settings, sort_keys=True)}"

    def answer(self, examples: Sequence[LMExample]) -> list[Reply]:
        """Greedy answers of one batch of examples (all of one task)."""
        from genrec.llm.tasks import PromptFormat

        if not examples:
            return []
        fmt = PromptFormat(self.tokenizer, system_prompt=self.system_prompt, max_length=self.max_prompt_tokens)
        batch = {k: v.to(self.model.device) for k, v in fmt.encode_prompts([e.prompt for e in examples]).items()}
        limit = self.max_new_tokens or MAX_NEW_TOKENS[examples[0].task]
        self.model.eval()
        eos = self.tokenizer.eos_token_id
        with torch.inference_mode():
            output = self.model.generate(**batch, max_new_tokens=limit, do_sample=False, num_beams=1,
                                         pad_token_id=self.tokenizer.pad_token_id, eos_token_id=eos,
                                         **self.generate_kwargs)
        replies = []
        for row in output[:, batch["input_ids"].shape[1]:].tolist():
            row = row[: row.index(eos)] if eos in row else row
            replies.append(Reply(self.tokenizer.decode(row, skip_special_tokens=True)))
        return replies


def _stable(value):
    """``value`` if it is JSON, else its type name (an object's repr holds its address, new every run)."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return type(value).__name__


class OpenAIBackend:
    """Any OpenAI-compatible HTTP endpoint (OpenAI, vLLM, llama.cpp server, Ollama, ...).

    Args:
        base_url: e.g. ``http://127.0.0.1:8000/v1`` (``/chat/completions`` is appended).
        model: the ``model`` field of each request.
        api_key_env: environment variable holding the key, read at call time (unset: no
            ``Authorization`` header, as local servers need).
        chat: ``/chat/completions`` with messages (default) or ``/completions`` with a prompt.
        max_tokens: answer length (default: :data:`MAX_NEW_TOKENS` per task).
        system_prompt: optional system message.
        timeout: seconds per request.
        retries: extra tries after a connection error, a timeout, 429 or 5xx (1 s, 2 s, ... apart).
        workers: requests in flight at once.
    """

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", chat: bool = True,
                 max_tokens: int | None = None, system_prompt: str | None = None, timeout: float = 120.0,
                 retries: int = 2, workers: int = 4):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if not model:
            raise ValueError("OpenAIBackend needs the model name the endpoint serves (its 'model' field)")
        self.base_url, self.model, self.api_key_env, self.chat = base_url.rstrip("/"), model, api_key_env, chat
        self.max_tokens, self.system_prompt, self.timeout = max_tokens, system_prompt, timeout
        self.retries, self.batch_size = max(0, retries), max(1, workers)
        self.url = f"{self.base_url}/{'chat/completions' if chat else 'completions'}"
        settings = {"max_tokens": max_tokens, "system_prompt": system_prompt, "temperature": 0}
        self.identity = f"openai:{self.url}|{model}|{json.dumps(settings, sort_keys=True)}"

    def answer(self, examples: Sequence[LMExample]) -> list[Reply]:
        """One request per example, ``workers`` at a time; order kept."""
        if len(examples) <= 1:
            return [self._ask(e) for e in examples]
        with ThreadPoolExecutor(max_workers=min(self.batch_size, len(examples))) as pool:
            return list(pool.map(self._ask, examples))

    def _ask(self, example: LMExample) -> Reply:
        body = {"model": self.model, "temperature": 0,
                "max_tokens": self.max_tokens or MAX_NEW_TOKENS[example.task]}
        if self.chat:
            messages = [{"role": "user", "content": example.prompt}]
            if self.system_prompt is not None:
                messages.insert(0, {"role": "system", "content": self.system_prompt})
            body["messages"] = messages
        else:
            body["prompt"] = example.prompt
        raw = self._post(json.dumps(body).encode())
        return self._parse(raw)

    def _post(self, data: bytes) -> bytes:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env, "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        for attempt in range(self.retries + 1):
            try:
                request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return response.read()
            except urllib.error.HTTPError as error:
                if error.code in (401, 403):
                    raise BackendError(f"{self.url} refused the request (HTTP {error.code}); put a valid API key in "
                                       f"the environment variable {self.api_key_env}") from None
                if error.code == 404:
                    raise BackendError(f"{self.url} answered HTTP 404; check the base URL (it usually ends in /v1) "
                                       f"and that the endpoint serves model {self.model!r}") from None
                if error.code != 429 and error.code < 500 or attempt == self.retries:
                    detail = error.read()[:200].decode("utf-8", "replace")
                    raise BackendError(f"{self.url} answered HTTP {error.code} ({detail!r}) after {attempt + 1} "
                                       "tries; check the endpoint's log, then run again (done answers are cached)"
                                       ) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
                if attempt == self.retries:
                    reason = getattr(error, "reason", error)
                    raise BackendError(f"cannot reach {self.url} ({reason}) after {attempt + 1} tries; start the "
                                       "server or fix --base-url, then run again (done answers are cached)") from None
            time.sleep(2 ** attempt)
        raise AssertionError("unreachable")

    def _parse(self, raw: bytes) -> Reply:
        try:
            choice = json.loads(raw)["choices"][0]
            text = choice["message"]["content"] if self.chat else choice["text"]
        except (ValueError, KeyError, IndexError, TypeError) as error:
            return Reply(None, f"malformed answer from {self.url} ({type(error).__name__}: {error}): "
                               f"{raw[:120].decode('utf-8', 'replace')!r}")
        if not isinstance(text, str):
            return Reply(None, f"malformed answer from {self.url}: content is {type(text).__name__}, not text")
        return Reply(text)


class RandomBackend:
    """Answers by chance, seeded per (seed, task, user); see the module docstring.

    Args:
        titles: ``titles[i]`` = item index i's title (index 0 unused); needed for ``retrieval``.
        seed: random seed.
    """

    batch_size = 256

    def __init__(self, titles: Sequence[str] | None = None, seed: int = 0):
        self.titles, self.seed = titles, seed
        self.identity = f"random:{seed}"

    def answer(self, examples: Sequence[LMExample]) -> list[Reply]:
        return [Reply(self._one(e)) for e in examples]

    def _one(self, example: LMExample) -> str:
        rng = np.random.default_rng([self.seed, zlib.crc32(example.task.encode()), example.user])
        if example.task == "retrieval":
            if self.titles is None:
                raise ValueError("RandomBackend needs the catalogue titles for retrieval: RandomBackend(titles)")
            picks = rng.choice(np.arange(1, len(self.titles)), size=example.num_recommendations, replace=False)
            return "".join(f"{self.titles[int(item)]}<end>" for item in picks)
        if example.task == "ranking":
            return "".join(f"{example.titles[int(item)]}<end>" for item in rng.permutation(example.candidates))
        return LETTERS[int(rng.integers(len(example.candidates)))]


class CallableBackend:
    """Wraps ``fn(prompts) -> texts`` (e.g. a decoding function of your own) as a backend.

    Args:
        fn: maps a list of prompts to a list of answers, same length.
        identity: names the model and settings behind ``fn`` (the cache key).
        batch_size: prompts per call.
    """

    def __init__(self, fn: Callable[[list[str]], list[str]], identity: str, batch_size: int = 8):
        if not identity:
            raise ValueError("CallableBackend needs an identity string naming the model (the answer cache key)")
        self.fn, self.identity, self.batch_size = fn, f"callable:{identity}", batch_size

    def answer(self, examples: Sequence[LMExample]) -> list[Reply]:
        texts = self.fn([e.prompt for e in examples])
        if len(texts) != len(examples):
            raise BackendError(f"{self.identity}: returned {len(texts)} answers for {len(examples)} prompts")
        return [Reply(t) if isinstance(t, str) else Reply(None, f"answer is {type(t).__name__}, not text")
                for t in texts]
