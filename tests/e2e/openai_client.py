"""The official OpenAI Python client against a running `studio serve`.

Usage: python openai_client.py BASE_URL   (e.g. http://127.0.0.1:8080/v1)
Prints one line per check and a closing "N passed, N failed".
"""
import concurrent.futures
import sys

from openai import OpenAI

from schemas import PERSON_SCHEMA

base = sys.argv[1]
client = OpenAI(base_url=base, api_key="unused")
model = client.models.list().data[0].id
results = []


def check(name):
    def wrap(fn):
        try:
            fn()
            results.append((name, None))
            print(f"ok   {name}")
        except Exception as e:  # noqa: BLE001 - report every failure, keep going
            results.append((name, e))
            print(f"FAIL {name}: {e!r}")
        return fn
    return wrap


@check("completion")
def _():
    r = client.completions.create(model=model, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert r.choices[0].text, r
    assert r.usage.completion_tokens == 8, r.usage
    assert r.choices[0].finish_reason == "length"


@check("streaming equals non-streaming")
def _():
    args = dict(model=model, prompt="Once upon a time", max_tokens=16, temperature=0)
    full = client.completions.create(**args).choices[0].text
    parts = [c.choices[0].text for c in client.completions.create(stream=True, **args) if c.choices]
    assert "".join(parts) == full, (parts, full)


@check("a prompt read over several steps streams like a short one (prefill comments skipped)")
def _():
    # Over the server's per-step token budget: the stream carries `: prefill` comment lines,
    # which the client must skip without a chunk or an error.
    prompt = "The sea was calm and the ships came home one by one. " * 8
    args = dict(model=model, prompt=prompt, max_tokens=6, temperature=0)
    full = client.completions.create(**args)
    assert full.usage.prompt_tokens > 64, full.usage
    chunks = list(client.completions.create(stream=True, **args))
    assert all(c.choices or c.usage for c in chunks), chunks
    assert "".join(c.choices[0].text for c in chunks if c.choices) == full.choices[0].text


@check("chat")
def _():
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hello."}],
                                       max_tokens=16, temperature=0)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    s = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hello."}],
                                       max_tokens=16, temperature=0, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in s if c.choices)
    assert text == r.choices[0].message.content, (text, r.choices[0].message.content)


@check("stop")
def _():
    r = client.completions.create(model=model, prompt="Count: 1, 2, 3, 4,", max_tokens=16, temperature=0, stop=["7"])
    assert "7" not in r.choices[0].text and r.choices[0].finish_reason == "stop", r


@check("logprobs")
def _():
    r = client.completions.create(model=model, prompt="Hello", max_tokens=4, temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == 4 and len(lp.top_logprobs[0]) == 3 and all(x <= 0 for x in lp.token_logprobs), lp


@check("seed reproducibility")
def _():
    args = dict(model=model, prompt="A poem about the sea:", max_tokens=16, temperature=1.0, seed=11)
    a = client.completions.create(**args).choices[0].text
    b = client.completions.create(**args).choices[0].text
    assert a == b, (a, b)


@check("16 concurrent greedy streams equal their solo runs")
def _():
    prompts = [f"Fact number {i}: the" for i in range(16)]

    def stream(p):
        s = client.completions.create(model=model, prompt=p, max_tokens=12, temperature=0, stream=True)
        return "".join(c.choices[0].text for c in s if c.choices)

    solo = [client.completions.create(model=model, prompt=p, max_tokens=12, temperature=0).choices[0].text for p in prompts]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        together = list(pool.map(stream, prompts))
    assert together == solo, [(a, b) for a, b in zip(together, solo) if a != b]


@check("korean and japanese streams have no broken characters")
def _():
    for p in ["한국어로 인사해 주세요:", "日本語で挨拶してください："]:
        args = dict(model=model, prompt=p, max_tokens=24, temperature=0)
        full = client.completions.create(**args).choices[0].text
        parts = [c.choices[0].text for c in client.completions.create(stream=True, **args) if c.choices]
        assert "".join(parts) == full and "\ufffd" not in "".join(parts), (parts, full)


@check("errors come in OpenAI's shape")
def _():
    import openai
    try:
        client.completions.create(model=model, prompt="hi", temperature=9)
    except openai.BadRequestError as e:
        assert e.body["param"] == "temperature", e.body
    else:
        raise AssertionError("temperature 9 was accepted")


@check("a saved template through the client, as the studio's View code shows it")
def _():
    template = OpenAI(base_url=base.rstrip("/") + "/templates/news-topic-en@latest", api_key="unused")
    args = dict(model=model, prompt="", extra_body={"variables": {"headline": "Stocks rally as central bank cuts rates"}})
    result = template.completions.create(**args)
    assert result.choices[0].text.strip(), result
    streamed = "".join(c.choices[0].text for c in template.completions.create(stream=True, **args) if c.choices)
    assert streamed == result.choices[0].text, (streamed, result.choices[0].text)


@check("a chat version through the client's chat API, at the template's URL")
def _():
    import json
    import urllib.request

    root = base.rstrip("/")
    spec = {
        "mode": "chat",
        "instruction": "You are a helpful assistant. Answer in one short sentence.",
        "examples": [{"input": "What is the capital of Italy?", "output": "The capital of Italy is Rome."}],
        "input_pattern": "What is the capital of {{country}}?",
        "parameters": {"temperature": 0, "max_tokens": 16, "stop": []},
    }
    req = urllib.request.Request(root.removesuffix("/v1") + "/api/templates", method="POST",
                                 data=json.dumps({"name": "capital-chat-sdk", "spec": spec}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 201, resp.read()
    template = OpenAI(base_url=root + "/templates/capital-chat-sdk@1", api_key="unused")
    args = dict(model=model, messages=[], extra_body={"variables": {"country": "France"}})
    result = template.chat.completions.create(**args)
    assert result.object == "chat.completion", result
    answer = result.choices[0].message.content
    assert answer and answer.strip(), result
    streamed = "".join(
        c.choices[0].delta.content or "" for c in template.chat.completions.create(stream=True, **args) if c.choices
    )
    assert streamed == answer, (streamed, answer)
    follow = template.chat.completions.create(
        model=model,
        messages=[{"role": "assistant", "content": answer}, {"role": "user", "content": "And of Spain?"}],
        extra_body={"variables": {"country": "France"}},
    )
    assert follow.choices[0].message.content.strip(), follow
    try:
        template.chat.completions.create(model=model, messages=[{"role": "system", "content": "x"}], extra_body=args["extra_body"])
    except Exception as e:  # noqa: BLE001 - the SDK's BadRequestError
        assert getattr(e, "status_code", None) == 400 and "messages[0].role" in str(e), e
    else:
        raise AssertionError("a system message was accepted")


@check("streamed echo sends the prompt once, first")
def _():
    prompt = "The capital of France is"
    chunks = [c for c in client.completions.create(model=model, prompt=prompt, max_tokens=8, echo=True,
                                                   stream=True, temperature=0) if c.choices]
    text = "".join(c.choices[0].text for c in chunks)
    assert chunks[0].choices[0].text == prompt and text.count(prompt) == 1, text
    full = client.completions.create(model=model, prompt=prompt, max_tokens=8, echo=True, temperature=0)
    assert full.choices[0].text == text, (full.choices[0].text, text)


@check("prompt scoring: echo + logprobs with max_tokens 0")
def _():
    r = client.completions.create(model=model, prompt="The capital of France is Paris", max_tokens=0, echo=True,
                                  logprobs=1)
    lp = r.choices[0].logprobs
    assert r.choices[0].text == "The capital of France is Paris" and r.usage.completion_tokens == 0, r
    assert lp.token_logprobs[0] is None and all(x <= 0 for x in lp.token_logprobs[1:]), lp
    assert len(lp.tokens) == r.usage.prompt_tokens, lp


@check("chat logprobs in the content shape, streamed and not; role once; usage chunk only when asked")
def _():
    args = dict(model=model, messages=[{"role": "user", "content": "안녕하세요를 영어로?"}], max_tokens=8,
                temperature=0, logprobs=True, top_logprobs=3)
    r = client.chat.completions.create(**args)
    content = r.choices[0].logprobs.content
    assert content and all(len(t.top_logprobs) == 3 and t.bytes is not None for t in content), content
    joined = bytes(b for t in content for b in t.bytes).decode("utf-8", "replace")
    assert joined.startswith(r.choices[0].message.content), (joined, r.choices[0].message.content)
    plain = list(client.chat.completions.create(stream=True, **args))
    assert all(c.usage is None for c in plain), "usage without include_usage"
    assert sum(1 for c in plain if c.choices and c.choices[0].delta.role) == 1, "role in more than one delta"
    assert sum(len(c.choices[0].logprobs.content) for c in plain if c.choices and c.choices[0].logprobs) == len(content)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **args))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == r.usage.completion_tokens, chunks[-1]
    assert all(c.usage is None for c in chunks[:-1])


@check("unknown model is NotFoundError; models.retrieve")
def _():
    import openai
    assert client.models.retrieve(model).id == model
    try:
        client.completions.create(model="gpt-17", prompt="hi", max_tokens=1)
    except openai.NotFoundError as e:
        assert e.body["code"] == "model_not_found", e.body
    else:
        raise AssertionError("an unknown model was accepted")


@check("chat content parts and null content")
def _():
    messages = [{"role": "system", "content": None},
                {"role": "user", "content": [{"type": "text", "text": "Say "}, {"type": "text", "text": "hello."}]}]
    a = client.chat.completions.create(model=model, messages=messages, max_tokens=6, temperature=0)
    b = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hello."}],
                                       max_tokens=6, temperature=0)
    assert a.choices[0].message.content == b.choices[0].message.content, (a, b)


@check("a template endpoint takes stream_options like /v1/completions")
def _():
    template = OpenAI(base_url=base.rstrip("/") + "/templates/news-topic-en@latest", api_key="unused")
    chunks = list(template.completions.create(model=model, prompt="", stream=True,
                                              stream_options={"include_usage": True},
                                              extra_body={"variables": {"headline": "Rain expected all week"}}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0, chunks[-1]


@check("response_format json_schema: 12 completions at temperature 0.7 all validate")
def _():
    import json

    import jsonschema

    topics = ["a baker", "a pilot", "a student in Seoul", "a retired teacher", "a chess player", "a nurse",
              "a farmer", "a painter", "a software developer", "a sailor", "a musician", "a gardener"]

    def one(i_topic):
        i, topic = i_topic
        r = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"Describe {topic} as a JSON record."}],
            max_tokens=120, temperature=0.7, seed=i,
            response_format={"type": "json_schema",
                             "json_schema": {"name": "person", "schema": PERSON_SCHEMA, "strict": True}})
        c = r.choices[0]
        assert c.finish_reason == "stop", (topic, c)
        value = json.loads(c.message.content)
        jsonschema.validate(value, PERSON_SCHEMA)
        return value

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        values = list(pool.map(one, enumerate(topics)))
    assert len(values) == len(topics)


@check("json_object, vLLM structured_outputs and guided_* fields through extra_body")
def _():
    import json
    import re

    r = client.completions.create(model=model, prompt="A JSON object describing a cat:", max_tokens=60,
                                  temperature=0.7, extra_body={"response_format": {"type": "json_object"}})
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].text), dict), r.choices[0].text
    labels = ["sports", "politics", "science"]
    for extra in [{"structured_outputs": {"choice": labels}}, {"guided_choice": labels}]:
        r = client.completions.create(model=model, prompt="Headline: New telescope finds water on Mars. Topic:",
                                      max_tokens=8, temperature=1.0, n=4, extra_body=extra)
        assert all(c.text in labels and c.finish_reason == "stop" for c in r.choices), r.choices
    for extra in [{"structured_outputs": {"regex": "[0-9]{3}-[0-9]{4}"}}, {"guided_regex": "[0-9]{3}-[0-9]{4}"}]:
        r = client.completions.create(model=model, prompt="Call me at", max_tokens=12, temperature=1.0,
                                      extra_body=extra)
        assert re.fullmatch(r"[0-9]{3}-[0-9]{4}", r.choices[0].text), r.choices[0].text
    grammar = 'start: "yes" | "no"'
    r = client.completions.create(model=model, prompt="Is water wet?", max_tokens=4, temperature=1.0,
                                  extra_body={"structured_outputs": {"grammar": grammar}})
    assert r.choices[0].text in ("yes", "no"), r.choices[0].text


@check("bad constraints, logit_bias and tools are 400s naming the field")
def _():
    import openai

    cases = [
        (dict(extra_body={"response_format": {"type": "json_schema",
                                              "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}}),
         "response_format.json_schema.schema"),
        (dict(extra_body={"guided_regex": "[0-9"}), "guided_regex"),
        (dict(extra_body={"structured_outputs": {"regex": "a", "choice": ["a"]}}), "structured_outputs.choice"),
        (dict(logit_bias={"5": 150}), "logit_bias"),
        (dict(logit_bias={str(i): 1 for i in range(301)}), "logit_bias"),
    ]
    for kwargs, param in cases:
        try:
            client.completions.create(model=model, prompt="hi", max_tokens=4, **kwargs)
        except openai.BadRequestError as e:
            assert e.body["param"] == param, (param, e.body)
        else:
            raise AssertionError(f"{kwargs} was accepted")
    try:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Weather?"}], max_tokens=4,
            tools=[{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}])
    except openai.BadRequestError as e:
        assert e.body["param"] == "tools" and "tool support" in e.body["message"], e.body
    else:
        raise AssertionError("tools were accepted")


@check("logit_bias +100 forces a token")
def _():
    import json
    import urllib.request

    req = urllib.request.Request(base.rstrip("/") + "/tokenize", method="POST",
                                 data=json.dumps({"prompt": " banana", "add_special_tokens": False}).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as resp:
        token = json.load(resp)["tokens"][0]
    r = client.completions.create(model=model, prompt="The capital of France is", max_tokens=3, temperature=0,
                                  logit_bias={str(token): 100})
    assert r.choices[0].text.count("banana") == 3, r.choices[0].text


failed = sum(1 for _, e in results if e)
print(f"{len(results) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
