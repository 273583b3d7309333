"""MAGQA judges: the offline judge, score parsing, and the OpenAI judge (chat completions and the batch flow)
through the `openai` client against a local stub server on 127.0.0.1."""

from __future__ import annotations

import email
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mmduet_core.data.benchmarks import write_examples
from mmduet_core.errors import InputError
from mmduet_core.evaluation import judges, magqa

pytest.importorskip("openai")


class _Stub(BaseHTTPRequestHandler):
    """The few OpenAI routes the judge uses. Scores: 5 when the prediction repeats the gold answer, else 2."""

    def log_message(self, *args):  # keep test output clean
        pass

    def _reply(self, obj, raw: bool = False):
        data = obj.encode() if raw else json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream" if raw else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    @staticmethod
    def score(body: dict) -> str:
        user = body["messages"][-1]["content"]
        gold = user.split("Ground Truth Answer: ")[1].split("\n")[0]
        return "5" if user.endswith(f"Predicted Answer: {gold}") else "2"

    def do_POST(self):
        state = self.server.state
        body = self.rfile.read(int(self.headers["Content-Length"]))
        state["requests"].append((self.path, self.headers.get("Authorization")))
        if self.path == "/v1/chat/completions":
            request = json.loads(body)
            state["chat"].append(request)
            self._reply({"id": "c", "object": "chat.completion", "created": 0, "model": request["model"],
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": self.score(request)}}]})
        elif self.path == "/v1/files":
            form = email.message_from_bytes(b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body)
            upload = next(p for p in form.walk() if p.get_filename())
            state["uploaded"] = upload.get_payload(decode=True).decode()
            self._reply({"id": "file-in", "object": "file", "bytes": len(state["uploaded"]), "created_at": 0,
                         "filename": upload.get_filename(), "purpose": "batch", "status": "processed"})
        elif self.path == "/v1/batches":
            state["batch_request"] = json.loads(body)
            self._reply(self._batch("validating"))
        else:
            self.send_error(404)

    def _batch(self, status):
        return {"id": "batch-1", "object": "batch", "endpoint": "/v1/chat/completions", "input_file_id": "file-in",
                "completion_window": "24h", "status": status, "created_at": 0,
                "output_file_id": "file-out" if status == "completed" else None}

    def do_GET(self):
        state = self.server.state
        state["requests"].append((self.path, self.headers.get("Authorization")))
        if self.path == "/v1/batches/batch-1":
            state["polls"] += 1
            self._reply(self._batch("completed" if state["polls"] > 1 else "in_progress"))
        elif self.path == "/v1/files/file-out/content":
            lines = []
            for line in state["uploaded"].splitlines():
                request = json.loads(line)
                lines.append(json.dumps({"id": "r", "custom_id": request["custom_id"], "response": {
                    "status_code": 200, "body": {"choices": [{"message": {"content": self.score(request["body"])}}]}}}))
            self._reply("\n".join(lines) + "\n", raw=True)
        else:
            self.send_error(404)


@pytest.fixture
def stub(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    server.state = {"requests": [], "chat": [], "polls": 0}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("MMDUET_TEST_KEY", "test-key")
    judge = judges.OpenAIJudge(base_url=f"http://127.0.0.1:{server.server_port}/v1", api_key_env="MMDUET_TEST_KEY",
                               timeout=10.0)
    yield judge, server.state
    server.shutdown()
    server.server_close()


def _magqa_files(tmp_path):
    gold = [{"question_id": "m1", "video": "v.mp4", "duration": 20.0,
             "conversation": [{"role": "user", "content": "What happens?", "time": 0.0}],
             "answer": [{"content": "A dog runs.", "time": [0.0, 5.0]}, {"content": "It sits.", "time": [5.0, 10.0]}]}]
    write_examples(gold, tmp_path / "gold.json")
    pred = {"question_id": "m1", "model_response_list": [
        {"time": 2.0, "content": "A dog runs.", "role": "assistant"},
        {"time": 7.0, "content": "A cat jumps.", "role": "assistant"}]}
    (tmp_path / "pred.jsonl").write_text(json.dumps(pred) + "\n")
    return tmp_path / "pred.jsonl", tmp_path / "gold.json"


def test_offline_judge_and_score_parsing():
    j = judges.OfflineJudge()
    assert j.score_many([("q", "a red car drives away", "a red car drives away"), ("q", "a red car", "blue sky")]) == [5, 1]
    assert not j.comparable_to_paper
    assert judges.parse_score("4 - mostly") == 4 and judges.parse_score("The score is 5") == 1


def test_openai_judge_chat_completions(stub, tmp_path):
    judge, state = stub
    assert judge.score_many([("Q?", "gold", "gold"), ("Q?", "gold", "other")]) == [5, 2]
    request = state["chat"][0]
    assert request["model"] == "gpt-4o-2024-08-06"
    assert request["messages"][0] == {"role": "system", "content": judges.GPT_SYSTEM}
    assert request["messages"][1]["content"] == "Question: Q?\nGround Truth Answer: gold\nPredicted Answer: gold"
    assert all(auth == "Bearer test-key" for _, auth in state["requests"])
    # through the evaluator: answer 1 <- the copy (5), answer 2 <- the other reply (2) -> 3.5
    pred, gold = _magqa_files(tmp_path)
    assert magqa.evaluate_magqa(pred, gold, judge)["in_span_score"] == 3.5


def test_openai_batch_flow_fills_the_cache(stub, tmp_path):
    judge, state = stub
    pred, gold = _magqa_files(tmp_path)
    items = magqa.pairs_to_judge(pred, gold)
    assert items == [("What happens?", "A dog runs.", "A dog runs."), ("What happens?", "It sits.", "A cat jumps.")]
    path = judge.build_batch_file([(judges.JudgeCache.key(i), i) for i in items], tmp_path / "batch.jsonl")
    batch_id = judge.submit_batch(path)
    assert batch_id == "batch-1" and state["uploaded"] == path.read_text()
    assert state["batch_request"] == {"input_file_id": "file-in", "endpoint": "/v1/chat/completions",
                                      "completion_window": "24h"}
    assert judge.collect_batch(batch_id) is None  # still running
    scores = judge.collect_batch(batch_id)
    assert sorted(scores.values()) == [2, 5]
    cache = judges.JudgeCache(tmp_path / "judged.jsonl", judge.name)
    cache.update(scores)
    sent = len(state["chat"])
    out = magqa.evaluate_magqa(pred, gold, judge, cache_path=tmp_path / "judged.jsonl")
    assert out["in_span_score"] == 3.5 and len(state["chat"]) == sent  # every pair came from the batch


def test_openai_judge_sends_nothing_without_a_key(stub, monkeypatch):
    judge, state = stub
    monkeypatch.delenv("MMDUET_TEST_KEY")
    with pytest.raises(InputError, match="nothing was sent"):
        judge.score_many([("q", "a", "b")])
    assert state["requests"] == []


def test_openai_judge_without_the_package_says_how_to_install(stub, monkeypatch):
    judge, _ = stub
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(InputError, match=r"mmduet\[judge\]"):
        judge.score_many([("q", "a", "b")])
