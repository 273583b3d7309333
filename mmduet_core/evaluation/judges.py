"""MAGQA judges behind one interface (`score_many`), and a disk cache of judged pairs.

`HFJudge`: a local instruct model with upstream's few-shot prompt, greedy decoding (upstream samples with the
model's default generation config, so its numbers vary run to run). `OpenAIJudge`: chat completions through the
`openai` client, or the batch-file flow (upstream's GPT-4o route). `OfflineJudge`: token overlap mapped to 1-5,
no model: for CI and teaching; its numbers are not comparable to the paper's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import InputError

JUDGE_SCALE = (
    "You are an evaluator for a video question answering system. Your task is to rate the correctness of the "
    "predicted answers against the ground truth answers. Use the following scale to assign a score:\n"
    "- 5: Perfect match; the predicted answer is completely correct and contains all the relevant information.\n"
    "- 4: Mostly correct; the predicted answer is largely accurate but may have minor omissions or slight "
    "inaccuracies.\n"
    "- 3: Partially correct; the predicted answer has some correct information, but also contains significant "
    "inaccuracies or missing key points.\n"
    "- 2: Slightly correct; the predicted answer has only a few correct elements, but most of the information is "
    "incorrect or irrelevant, or the predicted answer conflicts with the ground truth answer.\n"
    "- 1: Incorrect; the predicted answer is entirely wrong or does not address the question at all.\n"
)
FEW_SHOT_SYSTEM = JUDGE_SCALE + "\nHere are some examples to guide you:"
GPT_SYSTEM = JUDGE_SCALE + "Only reply with a number from 1 to 5, and nothing else."
FEW_SHOT = (
    ("What is shown about the black car?",
     "At night a black car is parked in the open space with its headlights on. The lights are very dazzling.",
     "The car's headlights are on and dazzling.", 4),
    ("What is shown in the video?",
     "In the video, a group of colorful paper birds on the wall move out from the upper right corner of the camera, "
     "and then a piece of blue folded paper appears in the camera.",
     "The colorful paper birds are created by folding paper.", 2),
    ("What is the man doing?", "The video shows a person wearing a helmet flipping several times in the air.",
     "The person wearing a helmet in the background is sitting in a crouch facing the other person.", 3),
    ("What is the current scene about?", "This is a close-up of a Mercedes-Benz car on display in the showroom.",
     "A Mercedes-Benz car is being displayed in the showroom.", 5),
    ("What was the unexpected sight in the room with the formally dressed snakes?",
     "The sight of the snake on the stage talking into a microphone, with many others holding cameras with their "
     "tongues out.",
     "A large snake lying on its back in a room with wooden walls and furniture, surrounded by other snakes.", 3),
    ("What had changed between the beginning and the end of the scene with the man in a black suit and a tie?",
     "The scene changed from the man talking in the chair to the man sitting on the sofa with a woman and a pizza "
     "box, and then to the man fixing his tie and turning to look at the woman.",
     "The man in a black suit and tie is eating pizza.", 1),
)


def judge_user_text(question: str, gold: str, pred: str) -> str:
    return f"Question: {question}\nGround Truth Answer: {gold}\nPredicted Answer: {pred}"


def parse_score(text: str) -> int:
    """Upstream's rule: the first character if it is 1-5, else 1."""
    text = text.strip()
    return int(text[0]) if text[:1] in ("1", "2", "3", "4", "5") else 1


# ---- judges -------------------------------------------------------------------------------------------------

class Judge(Protocol):
    name: str
    comparable_to_paper: bool

    def score_many(self, items: Sequence[tuple[str, str, str]]) -> list[int]:
        """(question, gold answer, predicted answer) -> scores 1-5."""


_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(["a", "an", "the", "is", "are", "was", "were", "of", "in", "on", "at", "to", "and", "with", "its", "it", "this", "that"])


class OfflineJudge:
    """Content-word F1 between gold and prediction mapped to 1 + round(4 F1). Needs no model; NOT comparable
    to the paper's LLM-judged numbers (it rewards shared words, not meaning)."""

    name = "offline-token-f1"
    comparable_to_paper = False

    def score_many(self, items):
        out = []
        for _, gold, pred in items:
            g = [w for w in _WORD.findall(gold.lower()) if w not in _STOP]
            p = [w for w in _WORD.findall(pred.lower()) if w not in _STOP]
            common = sum(min(g.count(w), p.count(w)) for w in set(p))
            f1 = 2 * common / (len(g) + len(p)) if g and p else 0.0
            out.append(1 + int(round(4 * f1)))
        return out


@dataclass
class HFJudge:
    """A local Hugging Face instruct model with upstream's few-shot prompt, greedy decoding, 32 new tokens."""

    model_id: str = "meta-llama/Meta-Llama-3.1-70B-Instruct"
    device: str = "auto"
    dtype: str = "bfloat16"
    comparable_to_paper: bool = True

    def __post_init__(self):
        self.name = f"hf:{self.model_id}:greedy"
        self._model = self._tokenizer = None

    def _load(self):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(self.model_id)
        self._model = AutoModelForCausalLM.from_pretrained(self.model_id, dtype=getattr(torch, self.dtype),
                                                           device_map=self.device).eval()

    def messages(self, question: str, gold: str, pred: str) -> list[dict]:
        msgs = [{"role": "system", "content": FEW_SHOT_SYSTEM}]
        for q, g, p, s in FEW_SHOT:
            msgs += [{"role": "user", "content": judge_user_text(q, g, p)}, {"role": "assistant", "content": str(s)}]
        return msgs + [{"role": "user", "content": judge_user_text(question, gold, pred)}]

    def score_many(self, items):
        import torch

        if self._model is None:
            self._load()
        out = []
        for question, gold, pred in items:
            ids = self._tokenizer.apply_chat_template(self.messages(question, gold, pred), add_generation_prompt=True,
                                                      return_tensors="pt", return_dict=True).to(self._model.device)
            with torch.no_grad():
                gen = self._model.generate(**ids, max_new_tokens=32, do_sample=False)
            out.append(parse_score(self._tokenizer.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)))
        return out


@dataclass
class OpenAIJudge:
    """Chat completions through the `openai` client (optional extra `judge`) on an OpenAI-compatible endpoint
    (upstream: gpt-4o-2024-08-06, its system prompt without examples), or the batch-file flow. The key is read
    from `api_key_env`; nothing is sent without it."""

    model: str = "gpt-4o-2024-08-06"
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str = "OPENAI_API_KEY"
    comparable_to_paper: bool = True
    timeout: float = 120.0

    def __post_init__(self):
        self.name = f"openai:{self.model}"

    def client(self):
        """An `openai.OpenAI` client for `base_url` (imported here: the package is an optional extra)."""
        key = os.environ.get(self.api_key_env)
        if not key:
            raise InputError(f"OpenAIJudge needs an API key in ${self.api_key_env}; nothing was sent")
        try:
            import openai
        except ImportError as exc:
            raise InputError("OpenAIJudge needs the openai package: pip install 'mmduet[judge]'") from exc
        return openai.OpenAI(api_key=key, base_url=self.base_url, timeout=self.timeout)

    def request_body(self, question: str, gold: str, pred: str) -> dict:
        return {"model": self.model, "messages": [{"role": "system", "content": GPT_SYSTEM},
                                                  {"role": "user", "content": judge_user_text(question, gold, pred)}]}

    def score_many(self, items):
        client = self.client()
        return [parse_score(client.chat.completions.create(**self.request_body(*item)).choices[0].message.content
                            or "") for item in items]

    # the batch flow (upstream's GPT-4o route): write a request file, submit it, collect the scores a day later
    def build_batch_file(self, pairs: Sequence[tuple[str, tuple[str, str, str]]], path: str | Path) -> Path:
        """One request per (custom_id, (question, gold, pred)). With `JudgeCache.key(item)` as the custom_id the
        collected scores go straight into the cache (`JudgeCache.update`)."""
        path = Path(path)
        with path.open("w") as f:
            for custom_id, item in pairs:
                f.write(json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                                    "body": self.request_body(*item)}) + "\n")
        return path

    def submit_batch(self, path: str | Path) -> str:
        """Upload the request file and start a 24 h batch; returns the batch id."""
        client = self.client()
        with Path(path).open("rb") as f:
            uploaded = client.files.create(file=f, purpose="batch")
        return client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                     completion_window="24h").id

    def collect_batch(self, batch_id: str) -> dict[str, int] | None:
        """{custom_id: score} once the batch has completed, else None."""
        client = self.client()
        batch = client.batches.retrieve(batch_id)
        if batch.status != "completed":
            return None
        out = {}
        for line in client.files.content(batch.output_file_id).text.splitlines():
            if line.strip():
                row = json.loads(line)
                out[row["custom_id"]] = parse_score(row["response"]["body"]["choices"][0]["message"]["content"])
        return out


def make_judge(spec: str) -> Judge:
    """"offline", "hf:<model id>" or "openai[:<model>]"."""
    if spec == "offline":
        return OfflineJudge()
    if spec.startswith("hf:"):
        return HFJudge(spec[3:])
    if spec.startswith("openai"):
        return OpenAIJudge(spec.split(":", 1)[1]) if ":" in spec else OpenAIJudge()
    raise InputError(f"unknown judge {spec!r}: offline, hf:<model id> or openai[:<model>]")


class JudgeCache:
    """Judged (question, gold, pred) triples on disk, one JSON line each, per judge."""

    def __init__(self, path: str | Path | None, judge_name: str):
        self.path = Path(path) if path else None
        self.judge_name = judge_name
        self.scores: dict[str, int] = {}
        if self.path and self.path.exists():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    if row["judge"] == judge_name:
                        self.scores[row["key"]] = row["score"]

    @staticmethod
    def key(item: tuple[str, str, str]) -> str:
        """The cache key of a (question, gold, pred) triple."""
        return hashlib.sha256("\x1f".join(item).encode()).hexdigest()

    def update(self, scores: dict[str, int]) -> None:
        """Store {key: score} (e.g. a collected batch whose custom_ids are cache keys)."""
        fresh = {k: int(v) for k, v in scores.items() if self.scores.get(k) != int(v)}
        self.scores.update(fresh)
        if self.path and fresh:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.writelines(json.dumps({"judge": self.judge_name, "key": k, "score": v}) + "\n"
                             for k, v in fresh.items())

    def judge(self, judge: Judge, items: list[tuple[str, str, str]]) -> list[int]:
        """Scores of `items`, asking `judge` only for the triples not cached yet."""
        todo = list(dict.fromkeys(i for i in items if self.key(i) not in self.scores))
        if todo:
            self.update(dict(zip(map(self.key, todo), judge.score_many(todo), strict=True)))
        return [self.scores[self.key(i)] for i in items]
