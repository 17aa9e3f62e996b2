"""Drive `ferrite serve` with the official `openai` Python client (tests/server.rs).

Usage: openai_client.py BASE_URL (like http://127.0.0.1:8080/v1). Prints one JSON object:
the greedy chat answer plain and streamed, a text completion, the model list, and the
status of a refused request.
"""

import json
import sys

import openai

client = openai.OpenAI(base_url=sys.argv[1], api_key="not-needed", max_retries=0, timeout=120)
question = [{"role": "user", "content": "What is 2+2?"}]

models = [m.id for m in client.models.list()]

chat = client.chat.completions.create(model=models[0], messages=question, temperature=0, max_tokens=16)
assert chat.choices[0].message.role == "assistant"
assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens

pieces = []
usage = None
stream = client.chat.completions.create(
    model=models[0],
    messages=question,
    temperature=0,
    max_tokens=16,
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
assert usage is not None and usage.completion_tokens == chat.usage.completion_tokens

completion = client.completions.create(
    model=models[0], prompt="The capital of France is", temperature=0, max_tokens=6
)
assert completion.choices[0].finish_reason == "length"

try:
    client.chat.completions.create(model=models[0], messages=question, max_tokens=-1)
    bad_status = None
except openai.BadRequestError as e:
    bad_status = e.status_code
    assert "max_tokens" in str(e)

print(
    json.dumps(
        {
            "models": models,
            "chat": chat.choices[0].message.content,
            "streamed": "".join(pieces),
            "completion": completion.choices[0].text,
            "bad_request_status": bad_status,
        }
    )
)
