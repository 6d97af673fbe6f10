#!/usr/bin/env python3
"""Build a tiny, random-weight Qwen3-VL-MoE model directory for offline tests.

    python scripts/build_tiny_qwen.py --out DIR

DIR receives a Hugging Face-layout checkpoint of the production architecture
``Qwen3VLMoeForConditionalGeneration`` (model_type ``qwen3_vl_moe``, the class of
Qwen/Qwen3-VL-30B-A3B-Instruct), small enough (a few MB) for vLLM's CPU build
to load in seconds.  Nothing is downloaded: the tokenizer is trained here on
the built-in ``CORPUS`` and the weights are drawn from a fixed seed, so two
builds on one CPU code path produce byte-identical files (torch's random
normal fill is vectorised, so another CPU may draw other weights).  The build
ends with a check (``check_model``) whose figures go to build-report.json.

Files written: tokenizer.json, tokenizer_config.json, chat_template.jinja,
config.json, generation_config.json, model.safetensors,
preprocessor_config.json, video_preprocessor_config.json.  Weights are float32:
vLLM's dtype="auto" downcasts them to bfloat16, so pass dtype="float32" to get
greedy outputs identical to transformers'.

Special tokens follow the 2000 trained BPE tokens, in Qwen's order:
<|endoftext|>=2000 (pad), <|im_start|>=2001, <|im_end|>=2002 (eos), ...,
<|vision_start|>=2009, <|vision_end|>=2010, <|vision_pad|>=2011,
<|image_pad|>=2012, <|video_pad|>=2013; then Qwen's non-special added tokens
<tool_call>=2014, </tool_call>=2015, ..., <tool_response>=2022, </tool_response>=2023,
<think>=2024, </think>=2025; config vocab_size is 2048.  The chat template is
Qwen3-VL's own (tools, Hermes tool calls, tool responses).

Image tokens.  The image processor first resizes an image of W x H pixels with
Qwen's ``smart_resize`` (factor F = patch_size * merge_size = 16 * 2 = 32):
W' and H' are W and H rounded to the nearest multiple of 32, then scaled
(keeping multiples of 32) into [MIN_PIXELS, MAX_PIXELS] = [32*32, 512*512]
if W' * H' falls outside it.  The prompt's single ``<|image_pad|>`` then
expands to

    num_image_tokens = (W' / 32) * (H' / 32)

so an image whose sides are multiples of 32 and whose area is within the
bounds is never resized: 96x64 -> 3 * 2 = 6 tokens, 128x128 -> 16 tokens.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from tiny_build_report import CheckFailed, build_report

if TYPE_CHECKING:
    from transformers import Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration

SEED = 1234
TARGET_VOCAB_SIZE = 2000
MODEL_MAX_LENGTH = 4096
PATCH_SIZE, MERGE_SIZE, TEMPORAL_PATCH_SIZE = 16, 2, 2
MIN_PIXELS, MAX_PIXELS = 32 * 32, 512 * 512

# Qwen's special tokens, exact strings, appended after the BPE vocab in this order.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen2's pre-tokenizer split (identical to transformers' Qwen2Tokenizer).
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen's added tokens that are not special (the tokenizer keeps them in decoded text whatever
# skip_special_tokens says), in Qwen's order after <|video_pad|>: tool-call markup, fill-in-the-middle,
# and think tags.
ADDED_TOKENS = [
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
]

# The chat template of Qwen3-VL's Instruct models, byte for byte: the prompt format is a fact of
# the model (system turn, tools in <tools>, Hermes <tool_call> JSON, <tool_response> turns, vision
# placeholders). Its SHA-256 is CHAT_TEMPLATE_SHA256, the figure recorded for the template that
# Qwen/Qwen3-VL-8B-Instruct ships; tests/test_chat_template.py checks both.
CHAT_TEMPLATE_SHA256 = "3636d0f0bd6bef02654cdffdc447b79cb2cef8ab02cc75267345946291a489e4"
CHAT_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' }}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set image_count = namespace(value=0) %}
{%- set video_count = namespace(value=0) %}
{%- for message in messages %}
    {%- if message.role == "user" %}
        {{- '<|im_start|>' + message.role + '\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role + '\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content_item in message.content %}
                {%- if 'text' in content_item %}
                    {{- content_item.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and message.content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

CORPUS = """\
The old lighthouse stood at the edge of the harbour, its white paint peeling in
long strips after a century of salt wind. Every evening the keeper climbed the
spiral stairs, counted the one hundred and twelve steps, and lit the great lamp.
Ships far out at sea watched for its slow green flash and turned toward home.

Mathematics is often described as the language of patterns. A child who notices
that two plus three equals three plus two has discovered commutativity, even if
she cannot yet name it. Later she will learn about prime numbers, fractions,
geometry, probability, and the strange beauty of infinite series.

In the market square, merchants arranged baskets of apples, pears, cherries and
plums. A baker sold warm bread with a crisp brown crust, while a cheesemaker
offered small samples on wooden boards. Children ran between the stalls, chasing
pigeons and laughing whenever the birds burst into the air.

Modern computers execute billions of instructions per second. Each instruction
is simple: load a value from memory, add two registers, compare a result, or jump
to another address. Compilers translate programs written in readable languages
into these instructions, and operating systems decide which program runs next.

The river begins as a thin stream high in the mountains, fed by melting snow.
It gathers water from hundreds of small creeks as it descends through forests
of pine and birch, then widens into a slow, brown current that carries boats,
logs, and sediment across the plains before finally reaching the ocean.

A good recipe for vegetable soup needs onions, carrots, celery, garlic, tomatoes,
beans, and a handful of fresh herbs. Chop everything, warm some olive oil in a
heavy pot, soften the onions, add the rest with water or stock, and simmer gently
for forty minutes. Season with salt and pepper, and serve it with bread.

Astronomers measure distances to nearby stars using parallax: as the Earth moves
around the Sun, a close star appears to shift against the background of distant
galaxies. The smaller the shift, the farther away the star. Light from the most
distant objects we can observe has travelled for more than thirteen billion years.

The library opened at nine o'clock on weekdays and at ten on Saturdays. Visitors
could borrow up to six books for three weeks, renew them twice, and reserve new
titles online. Quiet reading rooms filled the upper floor, and a small cafe near
the entrance sold coffee, tea, juice, and sandwiches until late afternoon.

Questions? Answers! Numbers like 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 42, 100 and
2024 appear in text, as do symbols such as #, $, %, &, *, +, -, =, /, @, (, ), [,
], {, }, <, >, quotes "like this", apostrophes, and colons: all of them matter.
Hello, world. How are you today? I'm fine, thank you, and you? We'll see. They've
gone. It's done. The image shows a cat, a dog, a red car and a blue sky.
"""


def text_config(vocab_size: int, ids: dict[str, int]) -> dict[str, Any]:
    """Tiny language model. head_dim 32: vLLM's CPU attention rejects head_dim 16."""
    return {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "norm_topk_prob": True,
        # 2 * 48 != 64 = hidden_size: a wrongly oriented expert tensor fails to load.
        "moe_intermediate_size": 48,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "max_position_embeddings": MODEL_MAX_LENGTH,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        # mrope_section sums to head_dim / 2, as the production [24, 20, 20] does for 128.
        "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [6, 5, 5], "mrope_interleaved": True},
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
    }


def vision_config(out_hidden_size: int) -> dict[str, Any]:
    """Tiny vision tower with the production patch geometry; deepstack feeds text layers 0, 1."""
    return {
        "depth": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_heads": 2,
        "hidden_act": "gelu_pytorch_tanh",
        "in_channels": 3,
        "patch_size": PATCH_SIZE,
        "spatial_merge_size": MERGE_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "out_hidden_size": out_hidden_size,
        "num_position_embeddings": 256,
        "deepstack_visual_indexes": [0, 1],
    }


def write_json(path: Path, obj: object) -> None:
    """Stable JSON: sorted keys, fixed indentation, trailing newline."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def build_tokenizer(out: Path) -> tuple[dict[str, int], int]:
    """Train a Qwen2-style byte-level BPE on CORPUS, write it with its config and chat
    template, and return ({special token: id}, tokenizer size)."""
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=TARGET_VOCAB_SIZE,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Lower/upper-cased copies give the small corpus enough distinct merges.
    corpus = CORPUS + CORPUS.lower() + CORPUS.upper()
    tok.train_from_iterator(corpus.splitlines(keepends=True), trainer=trainer)
    tok.add_special_tokens(SPECIAL_TOKENS)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ADDED_TOKENS])
    tok.save(str(out / "tokenizer.json"))

    ids: dict[str, int] = {}
    for t in SPECIAL_TOKENS + ADDED_TOKENS:
        token_id = tok.token_to_id(t)
        if token_id is None:  # never: every added token was just added
            raise RuntimeError(f"tiny Qwen: added token {t} is missing from the trained tokenizer")
        ids[t] = token_id
    if hashlib.sha256(CHAT_TEMPLATE.encode()).hexdigest() != CHAT_TEMPLATE_SHA256:
        raise CheckFailed("tiny Qwen: the chat template is not Qwen3-VL's (its SHA-256 differs)")
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "Qwen2Tokenizer",
            "add_prefix_space": False,
            "bos_token": None,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "unk_token": None,
            "errors": "replace",
            "clean_up_tokenization_spaces": False,
            "split_special_tokens": False,
            "model_max_length": MODEL_MAX_LENGTH,
            "additional_special_tokens": SPECIAL_TOKENS[1:],
            "added_tokens_decoder": {
                str(i): {
                    "content": t,
                    "lstrip": False,
                    "normalized": False,
                    "rstrip": False,
                    "single_word": False,
                    "special": t in SPECIAL_TOKENS,
                }
                for t, i in ids.items()
            },
        },
    )
    return ids, tok.get_vocab_size()


def build_model_config(out: Path, ids: dict[str, int], tokenizer_size: int) -> Qwen3VLMoeConfig:
    """Write config.json (vocab rounded up to a multiple of 64) and generation_config.json."""
    from transformers import Qwen3VLMoeConfig

    vocab_size = -(-tokenizer_size // 64) * 64
    config = Qwen3VLMoeConfig(
        text_config=text_config(vocab_size, ids),
        vision_config=vision_config(out_hidden_size=64),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
        architectures=["Qwen3VLMoeForConditionalGeneration"],
        dtype="float32",
    )
    config.save_pretrained(out)
    write_json(
        out / "generation_config.json",
        {
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
            "pad_token_id": ids["<|endoftext|>"],
        },
    )
    return config


def build_weights(out: Path, config: Qwen3VLMoeConfig) -> Qwen3VLMoeForConditionalGeneration:
    """Random-init the transformers model and save it in the original checkpoint layout; returns the model."""
    from transformers import Qwen3VLMoeForConditionalGeneration

    torch.manual_seed(SEED)
    # transformers leaves PreTrainedModel.eval() unannotated.
    model: Qwen3VLMoeForConditionalGeneration = Qwen3VLMoeForConditionalGeneration(config).eval()  # type: ignore[no-untyped-call]
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        # transformers keeps fused experts as gate_up [E, 2I, H] / down [E, H, I];
        # checkpoints (and vLLM's loader) use gate_up [E, H, 2I] / down [E, I, H].
        if name.endswith(("mlp.experts.gate_up_proj", "mlp.experts.down_proj")):
            tensor = tensor.transpose(1, 2)
        tensors[name] = tensor.detach().to(torch.float32).contiguous().clone()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "model.safetensors").chmod(0o644)  # save_file creates it 0600
    return model


def check_model(out: Path, built: Qwen3VLMoeForConditionalGeneration) -> dict[str, Any]:
    """Load the directory back the way a user's tools would and compare with the model in memory.

    The random weights decide nothing the tests rely on (they ask for exact token counts with ``ignore_eos``),
    so the check is about the files: the checkpoint reloads with the same logits (within a tolerance, as
    float results differ between CPU code paths), the chat template renders an image turn, and the image
    processor gives the documented token count.  The expert layout vLLM needs is checked by vLLM's loader
    itself (a wrongly oriented tensor fails to load, see ``text_config``); transformers accepts both.
    """
    from PIL import Image
    from transformers import AutoProcessor, Qwen3VLMoeForConditionalGeneration

    # transformers leaves AutoProcessor.from_pretrained() and PreTrainedModel.eval() unannotated.
    processor = AutoProcessor.from_pretrained(out)  # type: ignore[no-untyped-call]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the picture?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[Image.new("RGB", (96, 64), (200, 30, 30))], return_tensors="pt")
    image_tokens = int((inputs["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum())
    if image_tokens != 6:
        raise CheckFailed(f"tiny Qwen: a 96x64 image became {image_tokens} image tokens, expected 6")
    loaded = Qwen3VLMoeForConditionalGeneration.from_pretrained(out, dtype=torch.float32).eval()  # type: ignore[no-untyped-call]
    with torch.no_grad():
        expected, actual = built(**inputs).logits, loaded(**inputs).logits
    difference = float((expected - actual).abs().max())
    if difference > 1e-4:
        raise CheckFailed(f"tiny Qwen: the saved checkpoint computes other logits than the built model (max difference {difference:.2g})")
    return {"image_tokens_96x64": image_tokens, "max_logit_difference": difference}


def build_processor_configs(out: Path) -> None:
    """Qwen3-VL image/video processor settings (see the module docstring for token counts)."""
    common = {
        "patch_size": PATCH_SIZE,
        "merge_size": MERGE_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_convert_rgb": True,
        "do_resize": True,
        "do_rescale": True,
        "do_normalize": True,
        "processor_class": "Qwen3VLProcessor",
    }
    write_json(
        out / "preprocessor_config.json",
        {
            **common,
            "image_processor_type": "Qwen2VLImageProcessorFast",
            "size": {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
        },
    )
    write_json(
        out / "video_preprocessor_config.json",
        {
            **common,
            "video_processor_type": "Qwen3VLVideoProcessor",
            # Video bounds count pixels over all sampled frames (t * h * w); kept small
            # so that vLLM's worst-case video profiling stays cheap.
            "size": {"shortest_edge": MIN_PIXELS * TEMPORAL_PATCH_SIZE, "longest_edge": 256 * 256 * TEMPORAL_PATCH_SIZE},
            "fps": 2,
            "min_frames": 4,
            "max_frames": 16,
            "do_sample_frames": True,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="output model directory")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    with build_report(args.out, "qwen") as report:
        ids, tokenizer_size = build_tokenizer(args.out)
        config = build_model_config(args.out, ids, tokenizer_size)
        model = build_weights(args.out, config)
        build_processor_configs(args.out)
        report.update(check_model(args.out, model))
    print(f"wrote {args.out} (vocab {tokenizer_size}, image_pad id {ids['<|image_pad|>']})")


if __name__ == "__main__":
    main()
