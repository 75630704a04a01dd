"""Drive Cairn's OpenAI-compatible API with the official `openai` Python SDK, unmodified.

Usage: python openai_sdk.py BASE_URL API_KEY COLLECTION_MODEL [EMBEDDING_MODEL] [CHAT_MODEL]

Prints one JSON object with what each call returned; the Rust test
(crates/cairn/tests/api/openai_sdk.rs) checks it.
"""

import json
import sys

import openai
from openai import OpenAI


def main() -> None:
    base, key, collection_model = sys.argv[1:4]
    embedding_model = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] else None
    chat_model = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] else None
    client = OpenAI(base_url=base, api_key=key, max_retries=0, timeout=60)
    question = [{"role": "user", "content": "How do I restart the relay?"}]
    out = {"sdk_version": openai.__version__}

    out["models"] = [m.id for m in client.models.list()]

    r = client.chat.completions.create(model=collection_model, messages=question)
    out["completion"] = {
        "object": r.object,
        "model": r.model,
        "content": r.choices[0].message.content,
        "role": r.choices[0].message.role,
        "finish_reason": r.choices[0].finish_reason,
        "usage": r.usage.model_dump() if r.usage else None,
        "cairn": (r.model_extra or {}).get("cairn"),
    }

    parts, usage, finish, chunks = [], None, None, 0
    stream = client.chat.completions.create(
        model=collection_model,
        messages=question,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        chunks += 1
        if chunk.usage:
            usage = chunk.usage.model_dump()
        for c in chunk.choices:
            if c.delta.content:
                parts.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    out["stream"] = {
        "content": "".join(parts),
        "finish_reason": finish,
        "usage": usage,
        "chunks": chunks,
    }

    try:
        client.chat.completions.create(model="no-such-model", messages=question)
        out["unknown_model"] = None
    except openai.APIStatusError as e:
        out["unknown_model"] = {"status": e.status_code, "body": e.body}

    try:
        OpenAI(base_url=base, api_key="cairn_bogus", max_retries=0).models.list()
        out["bad_key"] = None
    except openai.AuthenticationError as e:
        out["bad_key"] = {"status": e.status_code}

    if embedding_model:
        e = client.embeddings.create(model=embedding_model, input=["A man is eating food.",
                                                                   "A man is eating a piece of bread."])
        f = client.embeddings.create(model=embedding_model, input="A man is eating food.",
                                     encoding_format="float")
        a, b = e.data[0].embedding, e.data[1].embedding
        out["embeddings"] = {
            "count": len(e.data),
            "dimensions": len(a),
            "cosine": sum(x * y for x, y in zip(a, b)),
            "float_matches_base64": max(abs(x - y) for x, y in zip(a, f.data[0].embedding)),
            "usage": e.usage.model_dump(),
        }

    if chat_model:
        r = client.chat.completions.create(
            model=chat_model,
            messages=[{"role": "system", "content": "Answer in one word."},
                      {"role": "user", "content": "Name a colour."}],
            max_tokens=8,
        )
        out["real_model"] = {
            "content": r.choices[0].message.content,
            "usage": r.usage.model_dump() if r.usage else None,
        }

    print(json.dumps(out))


if __name__ == "__main__":
    main()
