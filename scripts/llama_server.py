"""Serve a GGUF chat model over llama.cpp's OpenAI-compatible HTTP API (PyPI `xllamacpp`).

Usage: python llama_server.py MODEL.gguf PORT [ALIAS]

Used by scripts/services.sh to give the test suite and benchmarks a real model server; runs
until the process is stopped.
"""

import sys
import threading

import xllamacpp


def main() -> None:
    model, port = sys.argv[1], int(sys.argv[2])
    alias = sys.argv[3] if len(sys.argv) > 3 else "smollm2-135m"
    params = xllamacpp.CommonParams()
    params.model.path = model
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.n_ctx = 8192
    params.n_parallel = 4
    params.cpuparams.n_threads = 2
    params.model_alias = {alias}
    params.embedding = False
    server = xllamacpp.Server(params)
    # The server runs on its own threads while the object lives; keep both until stopped.
    threading.Event().wait()
    del server


if __name__ == "__main__":
    main()
