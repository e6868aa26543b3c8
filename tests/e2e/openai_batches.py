"""The official OpenAI Python client's files and batches API against a running `studio serve`.

Usage: python openai_batches.py BASE_URL [LINES]   (e.g. http://127.0.0.1:8080/v1 1000)
Prints one line per check and a closing "N passed, N failed".
"""
import io
import json
import sys
import time

import openai
from openai import OpenAI

base = sys.argv[1]
n_lines = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
client = OpenAI(base_url=base, api_key="unused")
model = client.models.list().data[0].id
results = []

SUBJECTS = ["the sea", "a small town", "the moon", "coffee", "a red bicycle", "winter", "the library", "a cat"]


def check(name):
    def wrap(fn):
        try:
            fn()
            results.append((name, None))
            print(f"ok   {name}", flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure, keep going
            results.append((name, e))
            print(f"FAIL {name}: {e!r}", flush=True)
        return fn
    return wrap


def body(i):
    # Few distinct prefixes, as real bulk work has: the prefix cache serves them.
    return {"model": model, "prompt": f"A short note about {SUBJECTS[i % len(SUBJECTS)]}, number {i}:",
            "max_tokens": 4, "temperature": 0}


def upload(lines):
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    return client.files.create(file=("requests.jsonl", io.BytesIO(text.encode())), purpose="batch")


def wait(batch_id, timeout=900):
    deadline = time.time() + timeout
    while time.time() < deadline:
        b = client.batches.retrieve(batch_id)
        if b.status in ("completed", "failed", "expired", "cancelled"):
            return b
        time.sleep(0.5)
    raise AssertionError(f"batch {batch_id} still {b.status} after {timeout}s: {b.request_counts}")


@check(f"a {n_lines}-line batch: upload, create, poll to completed, download")
def _():
    lines = [{"custom_id": f"line-{i}", "method": "POST", "url": "/v1/completions", "body": body(i)}
             for i in range(n_lines)]
    f = upload(lines)
    assert f.purpose == "batch" and f.bytes > 0, f
    assert client.files.retrieve(f.id).filename == "requests.jsonl"
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/completions", completion_window="24h",
                              metadata={"job": "e2e"})
    assert b.status in ("validating", "in_progress"), b
    assert b.request_counts.total == n_lines, b.request_counts
    t0 = time.time()
    b = wait(b.id)
    took = time.time() - t0
    print(f"     {n_lines} lines in {took:.1f}s ({n_lines / took * 60:.0f} lines/min)")
    assert b.status == "completed", b
    assert (b.request_counts.completed, b.request_counts.failed) == (n_lines, 0), b.request_counts
    assert b.metadata == {"job": "e2e"}, b.metadata
    assert b.completed_at and b.in_progress_at, b
    out = client.files.content(b.output_file_id).text
    rows = [json.loads(x) for x in out.splitlines()]
    ids = [r["custom_id"] for r in rows]
    assert len(ids) == n_lines and set(ids) == {f"line-{i}" for i in range(n_lines)}, len(ids)
    for r in rows:
        assert r["error"] is None, r
        assert r["response"]["status_code"] == 200, r
        c = openai.types.Completion.model_validate(r["response"]["body"])
        assert c.choices[0].finish_reason in ("length", "stop") and c.usage.completion_tokens <= 4, c
    by_id = {r["custom_id"]: r["response"]["body"]["choices"][0]["text"] for r in rows}
    # The same outputs as direct calls at temperature 0.
    for i in range(0, n_lines, max(1, n_lines // 20)):
        direct = client.completions.create(**body(i)).choices[0].text
        assert by_id[f"line-{i}"] == direct, (i, by_id[f"line-{i}"], direct)
    assert b.id in [x.id for x in client.batches.list(limit=100).data]


@check("chat and failing lines: failures go to the error file")
def _():
    lines = [
        {"custom_id": "ok", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": model, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 3}},
        {"custom_id": "bad", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": model, "messages": [{"role": "user", "content": "x"}], "temperature": 9}},
    ]
    b = client.batches.create(input_file_id=upload(lines).id, endpoint="/v1/chat/completions",
                              completion_window="24h")
    b = wait(b.id)
    assert b.status == "completed" and (b.request_counts.completed, b.request_counts.failed) == (1, 1), b
    ok = json.loads(client.files.content(b.output_file_id).text)
    assert ok["custom_id"] == "ok" and ok["response"]["body"]["choices"][0]["message"]["role"] == "assistant", ok
    bad = json.loads(client.files.content(b.error_file_id).text)
    assert bad["custom_id"] == "bad" and bad["response"]["status_code"] == 400, bad
    assert bad["response"]["body"]["error"]["param"] == "temperature", bad


@check("malformed input files get a 400 naming the line, and no batch is created")
def _():
    good = {"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {"prompt": "x"}}
    before = len(client.batches.list(limit=100).data)
    cases = [
        ([good, good], "line 2", "custom_id"),
        ([good, {**good, "custom_id": "b", "url": "/v1/embeddings"}], "line 2", "url"),
        ([], "no request lines", None),
    ]
    for lines, want, word in cases:
        f = upload(lines) if lines else client.files.create(file=("e.jsonl", io.BytesIO(b"\n")), purpose="batch")
        try:
            client.batches.create(input_file_id=f.id, endpoint="/v1/completions", completion_window="24h")
            raise AssertionError(f"accepted {lines}")
        except openai.BadRequestError as e:
            msg = e.body["message"]
            assert want in msg and (word is None or word in msg), msg
            assert e.body["param"] == "input_file_id", e.body
    f = client.files.create(file=("x.jsonl", io.BytesIO(b'{"custom_id":"a"\n')), purpose="batch")
    try:
        client.batches.create(input_file_id=f.id, endpoint="/v1/completions", completion_window="24h")
        raise AssertionError("accepted bad JSON")
    except openai.BadRequestError as e:
        assert "line 1" in e.body["message"], e.body
    for kw, param in [({"endpoint": "/v1/embeddings"}, "endpoint"), ({"completion_window": "1h"}, "completion_window")]:
        args = {"input_file_id": f.id, "endpoint": "/v1/completions", "completion_window": "24h", **kw}
        try:
            client.batches.create(**args)
            raise AssertionError(f"accepted {kw}")
        except openai.BadRequestError as e:
            assert e.body["param"] == param, e.body
    try:
        client.batches.create(input_file_id="file-missing", endpoint="/v1/completions", completion_window="24h")
        raise AssertionError("accepted a missing file")
    except openai.NotFoundError as e:
        assert e.body["param"] == "input_file_id", e.body
    assert len(client.batches.list(limit=100).data) == before, "nothing half-created"


@check("cancel a batch, delete a file")
def _():
    lines = [{"custom_id": f"c{i}", "method": "POST", "url": "/v1/completions", "body": body(i)} for i in range(400)]
    f = upload(lines)
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/completions", completion_window="24h")
    c = client.batches.cancel(b.id)
    assert c.status in ("cancelling", "cancelled"), c
    c = wait(b.id, timeout=120)
    assert c.status == "cancelled" and c.request_counts.completed < 400, c
    assert client.files.delete(f.id).deleted
    try:
        client.files.retrieve(f.id)
        raise AssertionError("deleted file still there")
    except openai.NotFoundError:
        pass


failed = sum(1 for _, e in results if e)
print(f"{len(results) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
