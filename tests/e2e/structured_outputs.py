"""Structured output at volume, with the official OpenAI Python client, against a running
`studio serve`: N json_schema completions (chat and completions, temperature 0.7, varied
prompts and seeds), each parsed and validated with `jsonschema`, then N choice-constrained
classifications, each checked to be one of the labels.

Usage: python structured_outputs.py BASE_URL [N]   (N defaults to 50)
Prints the model, the counts and the latency; exits 1 when any output is invalid.
A measurement for the README and closing notes (the CI suite runs the short version in
openai_client.py).
"""
import concurrent.futures
import json
import statistics
import sys
import time

import jsonschema
from openai import OpenAI

from schemas import PERSON_SCHEMA as SCHEMA

base = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 50
client = OpenAI(base_url=base, api_key="unused")
served = client.models.list().data[0]
model = served.id
# Chat needs the model's chat template (the bundled Gemma-3-270M base file has none): then
# every request goes to /v1/completions.
has_chat = bool((served.model_extra or {}).get("chat_template"))

PEOPLE = ["a baker", "a pilot", "a student in Seoul", "a retired teacher", "a chess player", "a nurse",
          "a farmer", "a painter", "a software developer", "a sailor", "a musician", "a gardener",
          "서울의 대학생", "東京の会社員", "a librarian", "a firefighter", "a chef in Busan"]
FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}}


def one_json(i):
    who = PEOPLE[i % len(PEOPLE)]
    started = time.monotonic()
    if i % 2 == 0 and has_chat:
        r = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"Describe {who} as a JSON record."}],
            max_tokens=160, temperature=0.7, seed=i, response_format=FORMAT)
        text, finish = r.choices[0].message.content, r.choices[0].finish_reason
    else:
        r = client.completions.create(model=model, prompt=f"A JSON record describing {who}:", max_tokens=160,
                                      temperature=0.7, seed=i, extra_body={"response_format": FORMAT})
        text, finish = r.choices[0].text, r.choices[0].finish_reason
    elapsed = time.monotonic() - started
    try:
        jsonschema.validate(json.loads(text), SCHEMA)
        return finish, True, elapsed, text
    except (json.JSONDecodeError, jsonschema.ValidationError):
        return finish, False, elapsed, text


LABELS = ["positive", "negative", "neutral"]
REVIEWS = ["The food was wonderful.", "I will never come back.", "It was fine, nothing special.",
           "배송이 빨라서 좋았어요.", "最悪の体験でした。", "The staff ignored us for an hour.",
           "Great value for the price.", "The room was clean but small."]


def one_choice(i):
    r = client.completions.create(model=model, prompt=f"Review: {REVIEWS[i % len(REVIEWS)]}\nSentiment:",
                                  max_tokens=8, temperature=1.0, seed=i, extra_body={"guided_choice": LABELS})
    return r.choices[0].text in LABELS and r.choices[0].finish_reason == "stop", r.choices[0].text


with concurrent.futures.ThreadPoolExecutor(8) as pool:
    t0 = time.monotonic()
    results = list(pool.map(one_json, range(n)))
    json_wall = time.monotonic() - t0
    choices = list(pool.map(one_choice, range(n)))

valid = sum(1 for _, ok, _, _ in results if ok)
stopped = sum(1 for f, _, _, _ in results if f == "stop")
lat = [e for _, _, e, _ in results]
print(f"model {model} ({'chat and completions' if has_chat else 'completions only: no chat template'})")
print(f"json_schema: {valid}/{n} parse and validate, {stopped}/{n} finished with stop; "
      f"latency p50 {statistics.median(lat):.2f} s, {n / json_wall:.1f} completions/s at 8 clients")
for f, ok, _, text in results:
    if not ok:
        print(f"  invalid ({f}): {text!r}")
good = sum(1 for ok, _ in choices if ok)
print(f"choice: {good}/{n} outputs are one of {LABELS}")
for ok, text in choices:
    if not ok:
        print(f"  not a label: {text!r}")
sys.exit(0 if valid == n and good == n else 1)
