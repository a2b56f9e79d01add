#!/usr/bin/env python3
"""Writes the seeds of the fuzz targets whose inputs are binary or have no natural
sample in the repository: fuzz_gguf, fuzz_safetensors, fuzz_lines. Small, valid files
that reach every branch of the parsers' happy paths (each value type, arrays of strings
and numbers, several tensor types and alignments, metadata, gzip), from which libFuzzer
mutates. Run from the repository root: python3 fuzz/make_seeds.py"""
import gzip
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- GGUF v2/v3 ----
T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64 = range(13)


def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, typ, payload):
    return gstr(key) + struct.pack("<I", typ) + payload


def gguf(kvs, tensors, version=3, alignment=32):
    """tensors: (name, ne list, ggml type, raw bytes)"""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    out += b"".join(kvs)
    off = 0
    infos = b""
    for name, ne, typ, raw in tensors:
        infos += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        infos += struct.pack("<IQ", typ, off)
        off += (len(raw) + alignment - 1) // alignment * alignment
    out += infos
    out += b"\0" * ((alignment - len(out) % alignment) % alignment)
    for _, _, _, raw in tensors:
        out += raw + b"\0" * ((alignment - len(raw) % alignment) % alignment)
    return out


f32 = lambda xs: struct.pack("<%df" % len(xs), *xs)
scalars = [
    kv("general.architecture", T_STR, gstr("llama")),
    kv("general.name", T_STR, gstr("seed")),
    kv("llama.block_count", T_U32, struct.pack("<I", 2)),
    kv("llama.rope.freq_base", T_F32, struct.pack("<f", 10000.0)),
    kv("x.u8", T_U8, b"\x07"), kv("x.i8", T_I8, b"\xf9"),
    kv("x.u16", T_U16, struct.pack("<H", 65535)), kv("x.i16", T_I16, struct.pack("<h", -3)),
    kv("x.i32", T_I32, struct.pack("<i", -5)), kv("x.bool", T_BOOL, b"\x01"),
    kv("x.u64", T_U64, struct.pack("<Q", 1 << 40)), kv("x.i64", T_I64, struct.pack("<q", -(1 << 40))),
    kv("x.f64", T_F64, struct.pack("<d", 0.25)),
]
tokens = [b"<unk>", b"<s>", b"</s>", b"a", b"\xe2\x96\x81the", b""]
arrays = [
    kv("tokenizer.ggml.tokens", T_ARR, struct.pack("<IQ", T_STR, len(tokens)) +
       b"".join(struct.pack("<Q", len(t)) + t for t in tokens)),
    kv("tokenizer.ggml.scores", T_ARR, struct.pack("<IQ", T_F32, len(tokens)) + f32([0, 0, 0, -1, -2, -3])),
    kv("tokenizer.ggml.token_type", T_ARR, struct.pack("<IQ", T_I32, len(tokens)) +
       struct.pack("<6i", 2, 3, 3, 1, 1, 1)),
]
w = f32([i / 8 for i in range(32)])
q8 = struct.pack("<e", 0.5) + bytes(range(32))  # one Q8_0 block: f16 scale + 32 int8
put("fuzz_gguf", "model_v3.gguf", gguf(scalars + arrays, [("w", [8, 4], 0, w), ("q", [32, 1], 8, q8),
                                                         ("b", [4], 0, f32([1, 2, 3, 4]))]))
put("fuzz_gguf", "model_v2.gguf", gguf(scalars[:4], [("w", [8, 4], 0, w)], version=2))
put("fuzz_gguf", "aligned64.gguf", gguf([kv("general.alignment", T_U32, struct.pack("<I", 64))] + arrays[:1],
                                        [("w", [16, 2], 0, f32(range(32))), ("v", [3], 0, f32([1, 2, 3]))],
                                        alignment=64))
put("fuzz_gguf", "empty.gguf", gguf([], []))
put("fuzz_gguf", "f16.gguf", gguf(scalars[:2], [("h", [4, 2], 1, struct.pack("<8e", *range(8)))]))


# ---- safetensors ----
def safetensors(tensors, metadata=None):
    """tensors: (name, dtype, shape, raw bytes)"""
    header, off, data = {}, 0, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


put("fuzz_safetensors", "f32.safetensors",
    safetensors([("a", "F32", [2, 3], f32(range(6))), ("b", "F32", [3], f32([1, -1, 0.5]))],
                {"format": "pt", "max_len": "200"}))
put("fuzz_safetensors", "halves.safetensors",
    safetensors([("h", "F16", [4], struct.pack("<4e", 1, 2, -3, 0.5)),
                 ("bf", "BF16", [2, 2], struct.pack("<4H", 0x3F80, 0x4000, 0xBF80, 0x0000))]))
put("fuzz_safetensors", "ints.safetensors",
    safetensors([("order", "I32", [5], struct.pack("<5i", 4, 3, 2, 1, 0)), ("i64", "I64", [2], struct.pack("<2q", 1, -1)),
                 ("scalar", "F32", [], f32([7])), ("empty", "F32", [0, 4], b"")], {"format": "mllm4rec-lru-checkpoint-2"}))
put("fuzz_safetensors", "f64_u8.safetensors",
    safetensors([("d", "F64", [2], struct.pack("<2d", 0.1, 0.2)), ("u", "U8", [3], b"\x01\x02\x03"),
                 ("bool", "BOOL", [2], b"\x00\x01")]))
put("fuzz_safetensors", "empty.safetensors", safetensors([]))

# ---- lines ----
text = b"user_id\titem_id\ttimestamp\nu1\t1\t5\r\nu2\t2\t6\n\nlast line without newline"
put("fuzz_lines", "plain.tsv", text)
put("fuzz_lines", "crlf.txt", b"a\r\nb\r\n\r\nc")
put("fuzz_lines", "utf8.txt", "Amélie (2001)\n東京物語\n".encode())
put("fuzz_lines", "text.gz", gzip.compress(text, mtime=0))
put("fuzz_lines", "long.txt", (b"x" * 70000 + b"\n") * 1 + b"tail\n")
print("seeds written under", ROOT)
