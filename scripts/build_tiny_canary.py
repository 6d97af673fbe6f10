#!/usr/bin/env python3
"""Build a tiny Canary model (.nemo) of the production class for offline tests.

    python scripts/build_tiny_canary.py --out DIR [--random-decoder] [--shape tiny|production]

DIR receives ``canary-tiny.nemo`` (about 3 MB): a NeMo ``EncDecMultiTaskModel``
(the class of nvidia/canary-1b-v2) with ``prompt_format: canary2``, restored in
about a second on CPU.  Nothing is downloaded: both tokenizers are trained here
on a built-in corpus, weights come from fixed seeds, and the archive is packed
deterministically (sorted members, zeroed mtimes and owners, artifact names
from content hashes instead of NeMo's random uuids).

Architecture (0.43 M parameters in the main model, 0.09 M in the aligner):

- preprocessor: ``AudioToMelSpectrogramPreprocessor``, 16 kHz, 128 mel bins,
  25 ms window, 10 ms stride (as canary-1b-v2);
- encoder: 2-layer FastConformer (``ConformerEncoder``, dw_striding x8
  subsampling, d_model 64, 4 heads, conv kernel 9): one encoder frame is 80 ms;
- decoder: 2-layer pre-LN transformer decoder (hidden 64, inner 256, 4 heads,
  sinusoidal positions, max 512 tokens) with a ``TokenClassifier`` head tied to
  the token embedding; decoding is beam search with beam 1 (canary-1b-v2's
  default), ``max_generation_delta`` 50;
- timestamp aligner: a CTC model (``EncDecCTCModelBPE``: 1-layer FastConformer,
  d_model 32, x2 subsampling so 20 ms frames, its own 96-piece BPE tokenizer)
  stored inside the .nemo as ``timestamps_asr_model_config.yaml`` and
  ``timestamps_asr_model_weights.ckpt`` (plus its tokenizer files), the member
  names ``EncDecMultiTaskModel.__restore_timestamps_asr_model`` looks for in
  NeMo 3.0, as in canary-1b-v2's .nemo.  ``restore_from`` therefore restores it
  as ``model.timestamps_asr_model``, and ``transcribe(..., timestamps=True)``
  runs the real forced-alignment path
  (``get_forced_aligned_timestamps_with_external_model``: Viterbi alignment of
  the decoded text on the CTC log-probs), giving ``hyp.timestamp['word']`` and
  ``hyp.timestamp['segment']`` with ``start``/``end`` in seconds.  NeMo skips
  alignment when the text has more tokens than the aligner has frames, hence
  x2 rather than canary-1b-v2's x8.

Weights.  Encoder, preprocessor and aligner keep their random initialization.
A random decoder only repeats one token up to the length limit (nothing to
align, nothing to check), so the decoder and the head's bias are fitted
(single-threaded, deterministic for one CPU code path) to say
``SENTENCES[target_lang]`` whatever the audio: "Hello world, this is a test."
for en, "Hallo Welt, das ist ein Test." for de (so translation is visible), and
so on; with ``pnc=no`` the same sentence lowercase without punctuation.  Word
times come from the random aligner, so they are valid but meaningless.
``--random-decoder`` skips the fitting.

``--shape production`` builds, instead, a model of canary-1b-v2's dimensions with random weights (for
``scripts/gpu_check``, which measures speed and memory, not words): a 32-layer FastConformer (d_model
1024, 8 heads, subsampling channels 256, no x-scaling), an 8-layer decoder (hidden 1024, inner 4096,
8 heads, 1024 positions) and a 16384-piece tokenizer (the same special tokens, then BPE pieces trained
on the built-in corpus plus generated pseudo-words), about 1 G parameters, 4 GB in float32, written as
``PRODUCTION_NEMO_NAME``.  Its decoder is never fitted (``--random-decoder`` is implied) and the
timestamp aligner stays the tiny one.  The default, ``--shape tiny``, is the model described above,
byte for byte.

The fit is checked, not trusted: float results differ between CPUs (SIMD width,
oneDNN and MKL kernels, thread counts), and a fit that only just passes on one
CPU says another language on the next.  It runs in rounds until, on held-out
signals of up to 30 s and for every (source, target, pnc), the expected token
beats the runner-up by ``MARGIN`` nats at every decoding step (usually 300-600
steps, 1-3 minutes); then NeMo's own ``transcribe`` must say the sentence for
every task the tests use (``CHECKED_TASKS``).  A failed check exits with code 3
and one line saying what failed.  The figures go to ``build-report.json``.
Builds are byte-identical across runs on one CPU code path, not across CPUs.

Tokenizer: one SentencePiece BPE model (256 pieces, ``type: bpe``) wrapped as
``custom_tokenizer: CanaryBPETokenizer``, canary-1b-v2's unified-tokenizer
setup.  The special tokens are user-defined symbols, so they follow
SentencePiece's ``<unk>``=0 in ``SPECIAL_TOKENS`` order:

    <unk>=0 <|nospeech|>=1 <pad>=2 <|endoftext|>=3 <|startoftranscript|>=4
    <|pnc|>=5 <|nopnc|>=6 <|startofcontext|>=7 <|itn|>=8 <|noitn|>=9
    <|timestamp|>=10 <|notimestamp|>=11 <|diarize|>=12 <|nodiarize|>=13
    <|spkchange|>=14 <|audioseparator|>=15 <|emo:undefined|>=16
    <|emo:neutral|>=17 <|emo:happy|>=18 <|emo:sad|>=19 <|emo:angry|>=20
    <|unklang|>=21 <|predict_lang|>=22
    language tags <|en|>=23 <|de|>=24 ... <|sv|>=47 (``LANGUAGES`` order)
    <|0|>=48 ... <|99|>=147
    BPE pieces 148..255

so pad=2, end-of-text=3, start-of-transcript=4 and start-of-context=7 as in
canary-1b-v2 (the build asserts these).  A canary2 prompt for en->de with
punctuation encodes as ``▁ <|startofcontext|> <|startoftranscript|>
<|emo:undefined|> <|en|> <|de|> <|pnc|> <|noitn|> <|notimestamp|>
<|nodiarize|>`` (the leading ``▁`` is SentencePiece's dummy prefix, which
NeMo's prompt formatter keeps with a ``CanaryBPETokenizer``), and the answer
ends with ``<|endoftext|>``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import random
import re
import shutil
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Set before NeMo (and huggingface_hub through it) is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

from tiny_build_report import CheckFailed, build_report

SEED = 1234
NEMO_NAME = "canary-tiny.nemo"
PRODUCTION_NEMO_NAME = "canary-1b-v2-shaped-random.nemo"
SAMPLE_RATE = 16000
N_MELS = 128
VOCAB_SIZE = 256
ALIGNER_VOCAB_SIZE = 96
# The fit (see fit_decoder) runs in rounds until, at every answer step, the expected token's log-probability beats
# the runner-up's by MARGIN nats (a probability ratio of e**3, about 20), for at most MAX_FIT_STEPS steps.  Float
# differences between CPU code paths move these log-probabilities by about 1e-5; the margin is for audio the fit
# never saw (speech rather than synthetic signals) and Triton's batching.
MARGIN = 3.0
LONGEST_WINDOW_S = 30.0  # the longest window the canary model decodes at once (CanaryEngine.max_chunk_s)
FIT_ROUND_STEPS = 50
MAX_FIT_STEPS = 2000
LR_DECAY_PER_ROUND = 0.9
# Checked through NeMo's own transcribe path as well: every (source, target, pnc) that the tests ask for.
CHECKED_TASKS = [("en", "en", "yes"), ("de", "en", "yes"), ("en", "fr", "yes"), ("en", "en", "no"), ("fr", "de", "no")]


@dataclass(frozen=True)
class Shape:
    """The dimensions that differ between the tiny model and canary-1b-v2's."""

    encoder_layers: int
    d_model: int
    encoder_heads: int
    subsampling_channels: int
    xscaling: bool
    decoder_layers: int
    decoder_hidden: int
    decoder_heads: int
    max_sequence_length: int
    vocab_size: int
    nemo_name: str


SHAPES = {
    "tiny": Shape(2, 64, 4, 64, True, 2, 64, 4, 512, VOCAB_SIZE, NEMO_NAME),
    # canary-1b-v2: FastConformer 32 x 1024 (8 heads, x8 dw_striding with 256 channels), decoder 8 x 1024, vocab 16384.
    "production": Shape(32, 1024, 8, 256, False, 8, 1024, 8, 1024, 16384, PRODUCTION_NEMO_NAME),
}
# Pseudo-words appended to the corpus for the production tokenizer: BPE needs enough distinct text to learn its pieces.
PRODUCTION_CORPUS_LINES = 60000

LANGUAGES = [
    "en", "de", "fr", "es", "it", "pt", "nl", "pl", "ru", "uk", "bg", "cs", "da",
    "el", "et", "fi", "hr", "hu", "lt", "lv", "mt", "ro", "sk", "sl", "sv",
]  # fmt: skip

# Order fixes the ids (see the module docstring); SentencePiece puts <unk> at 0 before them.
SPECIAL_TOKENS = [
    "<|nospeech|>",
    "<pad>",
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|pnc|>",
    "<|nopnc|>",
    "<|startofcontext|>",
    "<|itn|>",
    "<|noitn|>",
    "<|timestamp|>",
    "<|notimestamp|>",
    "<|diarize|>",
    "<|nodiarize|>",
    "<|spkchange|>",
    "<|audioseparator|>",
    "<|emo:undefined|>",
    "<|emo:neutral|>",
    "<|emo:happy|>",
    "<|emo:sad|>",
    "<|emo:angry|>",
    "<|unklang|>",
    "<|predict_lang|>",
    *(f"<|{lang}|>" for lang in LANGUAGES),
    *(f"<|{i}|>" for i in range(100)),
]
EXPECTED_IDS = {"<unk>": 0, "<pad>": 2, "<|endoftext|>": 3, "<|startoftranscript|>": 4, "<|startofcontext|>": 7}

# What the fitted decoder says for each target language (see _imprint_decoder). The tokenizer is Latin-only, so
# Cyrillic and Greek targets get a transliteration.
SENTENCES = {
    "en": "Hello world, this is a test.",
    "de": "Hallo Welt, das ist ein Test.",
    "fr": "Bonjour le monde, ceci est un test.",
    "es": "Hola mundo, esto es una prueba.",
    "it": "Ciao mondo, questo è un test.",
    "pt": "Olá mundo, isto é um teste.",
    "nl": "Hallo wereld, dit is een test.",
    "pl": "Witaj świecie, to jest test.",
    "ru": "Privet mir, eto test.",
    "uk": "Pryvit svite, tse test.",
    "bg": "Zdravey svyat, tova e test.",
    "cs": "Ahoj světe, toto je test.",
    "da": "Hej verden, dette er en test.",
    "el": "Geia sou kosme, afto einai ena test.",
    "et": "Tere maailm, see on test.",
    "fi": "Hei maailma, tämä on testi.",
    "hr": "Pozdrav svijete, ovo je test.",
    "hu": "Helló világ, ez egy teszt.",
    "lt": "Labas pasauli, tai testas.",
    "lv": "Sveika pasaule, šis ir tests.",
    "mt": "Bongu dinja, dan huwa test.",
    "ro": "Salut lume, acesta este un test.",
    "sk": "Ahoj svet, toto je test.",
    "sl": "Pozdravljen svet, to je test.",
    "sv": "Hej världen, detta är ett test.",
}

# Latin-script text only: the 148 special tokens leave 108 pieces, and every distinct character takes one of them.
CORPUS_LINES = [
    "the quick brown fox jumps over the lazy dog near the river bank",
    "speech recognition and translation work on short and long audio files",
    "please transcribe every word you hear and keep the punctuation in place",
    "we measure the time of each word and each segment in seconds",
    "Good morning everyone, thank you for joining the meeting today.",
    "Can you hear me? Yes, the sound is clear and the line is stable!",
    "numbers like one two three four five six seven eight nine ten",
    "der schnelle braune fuchs springt über den faulen hund am fluss",
    "le renard brun rapide saute par dessus le chien paresseux près de la rivière",
    "el rápido zorro marrón salta sobre el perro perezoso junto al río",
]


def _unpunctuated(text: str) -> str:
    return re.sub(r"[^\w\s']", "", text).lower()


def _corpus() -> str:
    lines = [*CORPUS_LINES, *SENTENCES.values(), *(_unpunctuated(t) for t in SENTENCES.values())]
    return "\n".join(lines) + "\n"


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _pseudo_words(lines: int) -> str:
    """Seeded lines of random Latin-script pseudo-words: enough distinct text for a 16384-piece BPE."""
    rng = random.Random(SEED)
    letters = "abcdefghijklmnopqrstuvwxyzäöüéèàçñ"
    words = (" ".join("".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(12)) for _ in range(lines))
    return "\n".join(words) + "\n"


def _train_tokenizer(work_dir: Path, name: str, vocab_size: int, user_symbols: list[str] | None, extra_text: str = "") -> Path:
    """Train a BPE model on the corpus (and ``extra_text``) into work_dir/name; returns that directory (tokenizer.model, ...)."""
    import sentencepiece
    from nemo.collections.common.tokenizers.sentencepiece_tokenizer import create_spt_model

    sentencepiece.set_random_generator_seed(SEED)
    sentencepiece.set_min_log_level(2)
    corpus = work_dir / "corpus.txt"
    corpus.write_text(_corpus() + extra_text, encoding="utf-8")
    # The model proto records the training paths: relative ones keep it identical across builds.
    with contextlib.chdir(work_dir):
        create_spt_model(
            corpus.name,
            vocab_size=vocab_size,
            sample_size=-1,
            do_lower_case=False,
            tokenizer_type="bpe",
            output_dir=name,
            user_defined_symbols=user_symbols,
            remove_extra_whitespaces=True,
        )
    return work_dir / name


def _check_special_ids(model_path: Path) -> None:
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(model_path))
    for token, expected in EXPECTED_IDS.items():
        actual = sp.piece_to_id(token)
        if actual != expected:
            raise RuntimeError(f"tokenizer gave {token}={actual}, expected {expected}")
    for offset, token in enumerate(SPECIAL_TOKENS, start=1):
        if sp.piece_to_id(token) != offset:
            raise RuntimeError(f"special token {token} is not at id {offset}")


def _preprocessor_cfg() -> dict[str, Any]:
    return {
        "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
        "sample_rate": SAMPLE_RATE,
        "normalize": "per_feature",
        "window_size": 0.025,
        "window_stride": 0.01,
        "window": "hann",
        "features": N_MELS,
        "n_fft": 512,
        "log": True,
        "frame_splicing": 1,
        "dither": 1e-5,
        "pad_to": 0,
        "pad_value": 0.0,
    }


def _fastconformer_cfg(
    n_layers: int, d_model: int, subsampling_factor: int, n_heads: int = 4, subsampling_channels: int | None = None, xscaling: bool = True
) -> dict[str, Any]:
    return {
        "_target_": "nemo.collections.asr.modules.ConformerEncoder",
        "feat_in": N_MELS,
        "feat_out": -1,
        "n_layers": n_layers,
        "d_model": d_model,
        "subsampling": "dw_striding",
        "subsampling_factor": subsampling_factor,
        "subsampling_conv_channels": subsampling_channels or d_model,
        "causal_downsampling": False,
        "ff_expansion_factor": 4,
        "self_attention_model": "rel_pos",
        "n_heads": n_heads,
        "att_context_size": [-1, -1],
        "xscaling": xscaling,
        "untie_biases": True,
        "pos_emb_max_len": 5000,
        "conv_kernel_size": 9,
        "conv_norm_type": "batch_norm",
        "dropout": 0.0,
        "dropout_pre_encoder": 0.0,
        "dropout_emb": 0.0,
        "dropout_att": 0.0,
    }


def _tokenizer_cfg(tokenizer_dir: Path) -> dict[str, Any]:
    # Explicit files and no `dir`, so that the saved config holds no path of this build's temporary directory.
    return {
        "dir": None,
        "type": "bpe",
        "model_path": str(tokenizer_dir / "tokenizer.model"),
        "vocab_path": str(tokenizer_dir / "vocab.txt"),
        "spe_tokenizer_vocab": str(tokenizer_dir / "tokenizer.vocab"),
    }


def _aligner_cfg(tokenizer_dir: Path) -> dict[str, Any]:
    return {
        "sample_rate": SAMPLE_RATE,
        "tokenizer": _tokenizer_cfg(tokenizer_dir),
        "preprocessor": _preprocessor_cfg(),
        "encoder": _fastconformer_cfg(n_layers=1, d_model=32, subsampling_factor=2),
        "decoder": {
            "_target_": "nemo.collections.asr.modules.ConvASRDecoder",
            "feat_in": 32,
            "num_classes": -1,
            "vocabulary": [],
        },
        "decoding": {"strategy": "greedy_batch"},
    }


def _canary_cfg(tokenizer_dir: Path, shape: Shape = SHAPES["tiny"]) -> dict[str, Any]:
    hidden = shape.decoder_hidden
    return {
        "sample_rate": SAMPLE_RATE,
        "prompt_format": "canary2",
        "prompt_defaults": [
            {
                "role": "user",
                "slots": {
                    "decodercontext": "",
                    "source_lang": "<|en|>",
                    "target_lang": "<|en|>",
                    "emotion": "<|emo:undefined|>",
                    "pnc": "<|pnc|>",
                    "itn": "<|noitn|>",
                    "diarize": "<|nodiarize|>",
                    "timestamp": "<|notimestamp|>",
                },
            },
            {"role": "user_partial", "slots": {"decodercontext": ""}},
        ],
        "tokenizer": {
            **_tokenizer_cfg(tokenizer_dir),
            "custom_tokenizer": {"_target_": "nemo.collections.common.tokenizers.canary_tokenizer.CanaryBPETokenizer"},
        },
        "model_defaults": {"asr_enc_hidden": shape.d_model, "lm_enc_hidden": hidden, "lm_dec_hidden": hidden},
        "preprocessor": _preprocessor_cfg(),
        "encoder": _fastconformer_cfg(
            n_layers=shape.encoder_layers,
            d_model=shape.d_model,
            subsampling_factor=8,
            n_heads=shape.encoder_heads,
            subsampling_channels=shape.subsampling_channels,
            xscaling=shape.xscaling,
        ),
        "transf_decoder": {
            "_target_": "nemo.collections.asr.modules.transformer.get_nemo_transformer",
            "model_name": None,
            "pretrained": False,
            "encoder": None,
            "pre_ln_final_layer_norm": True,
            "config_dict": {
                "max_sequence_length": shape.max_sequence_length,
                "num_token_types": 0,
                "embedding_dropout": 0.0,
                "learn_positional_encodings": False,
                "hidden_size": hidden,
                "inner_size": 4 * hidden,
                "num_layers": shape.decoder_layers,
                "num_attention_heads": shape.decoder_heads,
                "ffn_dropout": 0.0,
                "attn_score_dropout": 0.0,
                "attn_layer_dropout": 0.0,
                "hidden_act": "relu",
                "pre_ln": True,
                "vocab_size": None,
            },
        },
        "head": {
            "_target_": "nemo.collections.asr.parts.submodules.token_classifier.TokenClassifier",
            "num_layers": 1,
            "activation": "relu",
            "log_softmax": True,
            "hidden_size": hidden,
            "num_classes": None,
            "dropout": 0.0,
            "use_transformer_init": True,
        },
        "decoding": {
            "strategy": "beam",
            "return_best_hypothesis": True,
            "beam": {"beam_size": 1, "len_pen": 0.0, "max_generation_delta": 50},
        },
        "loss": {
            "_target_": "nemo.collections.common.losses.smoothed_cross_entropy.SmoothedCrossEntropyLoss",
            "label_smoothing": 0.0,
        },
    }


def _synthetic_signals(seed: int, count: int = 8, longest_s: float = 6.0) -> list[torch.Tensor]:
    """Noise bursts, pitched tones and silence of 0.5 s to ``longest_s``: stand-ins for speech."""
    gen = torch.Generator().manual_seed(seed)
    signals = []
    for i in range(count):
        n = int(SAMPLE_RATE * (0.5 + (longest_s - 0.5) * i / (count - 1)))
        t = torch.arange(n) / SAMPLE_RATE
        if i % 4 == 0:
            x = torch.zeros(n)
        elif i % 4 == 1:
            x = 0.1 * torch.randn(n, generator=gen)
        else:
            pitch = 100.0 + 150.0 * torch.rand(1, generator=gen)
            envelope = 0.5 + 0.5 * torch.sin(2 * torch.pi * 3.0 * t)
            x = envelope * sum(torch.sin(2 * torch.pi * k * pitch * t) / k for k in range(1, 6)) * 0.2
            x = x + 0.01 * torch.randn(n, generator=gen)
        signals.append(x.float())
    return signals


def _held_out_signals() -> list[torch.Tensor]:
    """Signals the fit never sees, up to the longest window."""
    return _synthetic_signals(SEED + 3, count=4, longest_s=LONGEST_WINDOW_S)


def _fit_batch(model: Any, signals: list[torch.Tensor], sources: list[str] | None) -> dict[str, Any]:
    """Encoder states of ``signals`` and the teacher-forcing batch of every (target, pnc) answer.

    ``sources`` None: one row per (target, pnc), its source slot overwritten at random at every fitting step.
    Otherwise one row per (source, target, pnc) for every listed source (the target itself for "same").
    """
    lengths = torch.tensor([len(x) for x in signals])
    audio = torch.nn.utils.rnn.pad_sequence(signals, batch_first=True)
    model.eval()
    with torch.no_grad():
        _, _, enc_states, enc_mask = model.forward(input_signal=audio, input_signal_length=lengths)
    rows, sequences, answer_starts = [], [], []
    for target in LANGUAGES:
        for pnc in ("yes", "no"):
            for source in sources or [target]:
                source = target if source == "same" else source
                turns = model.prompt.get_default_dialog_slots()
                turns[0]["slots"].update(source_lang=source, target_lang=target, pnc=pnc)
                text = SENTENCES[target] if pnc == "yes" else _unpunctuated(SENTENCES[target])
                encoded = model.prompt.encode_dialog([*turns, {"role": "assistant", "slots": {"text": text}}])
                rows.append((source, target, pnc))
                sequences.append(encoded["input_ids"])
                answer_starts.append(len(encoded["context_ids"]))
    ids = torch.nn.utils.rnn.pad_sequence(sequences, batch_first=True, padding_value=model.tokenizer.pad_id)
    positions = torch.arange(ids.shape[1] - 1)
    seq_lens = torch.tensor([len(x) for x in sequences])
    return {
        "rows": rows,
        "ids": ids,
        "enc_states": enc_states,
        "enc_mask": enc_mask,
        # Label position p predicts token p + 1; only the answer's tokens (EOS included) count.
        "answer_mask": (positions >= torch.tensor(answer_starts)[:, None] - 1) & (positions < seq_lens[:, None] - 1),
        "decoder_mask": (positions < seq_lens[:, None] - 1).long(),
    }


def _answer_log_probs(model: Any, batch: dict[str, Any], inputs: torch.Tensor, signal_of_row: torch.Tensor) -> torch.Tensor:
    dec_states = model.transf_decoder(
        input_ids=inputs,
        decoder_mask=batch["decoder_mask"],
        encoder_embeddings=batch["enc_states"][signal_of_row],
        encoder_mask=batch["enc_mask"][signal_of_row],
    )
    return model.log_softmax(hidden_states=dec_states)


def decoding_margin(model: Any, batch: dict[str, Any]) -> tuple[float, str]:
    """The smallest gap, over every answer step of every row and signal, between the expected token's
    log-probability and the best other token's, under teacher forcing, and where it occurs.

    Greedy decoding (canary's beam 1) follows the teacher-forced path exactly while that gap is positive, so a
    gap of at least MARGIN at every step means the decoded text is the sentence, with room for the float
    differences of other CPUs, thread counts and Triton's batching.
    """
    ids, answer_mask = batch["ids"], batch["answer_mask"]
    labels = ids[:, 1:]
    worst, where = float("inf"), ""
    with torch.no_grad():
        for signal in range(len(batch["enc_states"])):
            log_probs = _answer_log_probs(model, batch, ids[:, :-1], torch.full((len(ids),), signal))
            expected = log_probs.gather(-1, labels[..., None]).squeeze(-1)
            others = log_probs.scatter(-1, labels[..., None], float("-inf")).max(-1).values
            gaps = (expected - others).masked_fill(~answer_mask, float("inf"))
            row_gaps = gaps.min(-1)
            row = int(row_gaps.values.argmin())
            if float(row_gaps.values[row]) < worst:
                source, target, pnc = batch["rows"][row]
                step = int(row_gaps.indices[row]) - int(answer_mask[row].nonzero()[0])
                worst = float(row_gaps.values[row])
                where = f"{source}->{target} pnc={pnc}, answer token {step}, held-out signal {signal}"
    return worst, where


def fit_decoder(model: Any, max_steps: int = MAX_FIT_STEPS) -> dict[str, Any]:
    """Fit the decoder (and head bias) so that greedy decoding says SENTENCES[target_lang] whatever the audio.

    A random transformer decoder repeats one token up to the length limit, which leaves nothing for the aligner
    to align and nothing for tests to check.  Teacher-forced on every (target, pnc) prompt with a random source
    language, over the encoder states of a few synthetic signals, it learns to ignore the audio and emit the
    target language's sentence, punctuated and cased with ``pnc=yes``, lowercase without punctuation with
    ``pnc=no``, then EOS.  It is fitted in rounds of FIT_ROUND_STEPS until ``decoding_margin`` on held-out
    signals and every source reaches MARGIN, for at most ``max_steps``.  The encoder, preprocessor and aligner
    keep their random weights.  Returns the fit's figures.
    """
    threads = torch.get_num_threads()
    started = time.monotonic()
    try:
        # One thread for the fit: the same float reductions, hence the same weights, for one CPU code path.
        torch.set_num_threads(1)
        torch.manual_seed(SEED + 2)
        train = _fit_batch(model, _synthetic_signals(SEED, longest_s=LONGEST_WINDOW_S), sources=None)
        ids = train["ids"]
        labels = ids[:, 1:]
        # Row 0 has source = target = LANGUAGES[0], and the template puts source_lang before target_lang.
        source_pos = int((ids[0] == model.tokenizer.token_to_id(f"<|{LANGUAGES[0]}|>")).nonzero()[0])
        lang_ids = torch.tensor([model.tokenizer.token_to_id(f"<|{lang}|>") for lang in LANGUAGES])
        params = [*model.transf_decoder.parameters(), model.log_softmax.mlp.layer0.bias]
        optimizer = torch.optim.Adam(params, lr=5e-3)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=LR_DECAY_PER_ROUND)
        # Each round measures the margin with two sources; only a round that passes pays for all of them.
        quick_sources, held_out, full = ["same", "en"], None, None
        steps, loss, margin, where = 0, torch.tensor(float("nan")), float("-inf"), "not fitted"
        while steps < max_steps:
            model.transf_decoder.train()
            for _ in range(FIT_ROUND_STEPS):
                inputs = ids[:, :-1].clone()
                inputs[:, source_pos] = lang_ids[torch.randint(len(LANGUAGES), (len(ids),))]
                log_probs = _answer_log_probs(model, train, inputs, torch.randint(len(train["enc_states"]), (len(ids),)))
                expected = log_probs.gather(-1, labels[..., None]).squeeze(-1)
                loss = -expected[train["answer_mask"]].mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            scheduler.step()
            steps += FIT_ROUND_STEPS
            model.transf_decoder.eval()
            # The margin is measured with the caller's thread count: only the fit is pinned to one thread.
            torch.set_num_threads(threads)
            if held_out is None:
                held_out = _fit_batch(model, _held_out_signals(), sources=quick_sources)
            margin, where = decoding_margin(model, held_out)
            if margin >= MARGIN:
                full = full or _fit_batch(model, _held_out_signals(), sources=LANGUAGES)
                margin, where = decoding_margin(model, full)
            torch.set_num_threads(1)
            print(f"decoder fit: {steps} steps, loss {loss.item():.4f}, smallest margin {margin:.2f} ({where})", flush=True)
            if margin >= MARGIN:
                break
    finally:
        torch.set_num_threads(threads)
    figures = {
        "steps": steps,
        "final_loss": round(loss.item(), 6),
        "margin": round(margin, 3),
        "required_margin": MARGIN,
        "fit_seconds": round(time.monotonic() - started, 1),
    }
    if margin < MARGIN:
        raise CheckFailed(
            f"tiny Canary: after {steps} fitting steps the decoder's smallest margin is {margin:.2f} nats ({where}); {MARGIN} is required"
        )
    return figures


def check_sentences(model: Any) -> None:
    """Through NeMo's own transcribe path, decode held-out signals for every (source, target, pnc) the
    tests use and compare with SENTENCES exactly."""
    from nemo.collections.asr.models.aed_multitask_models import MultiTaskTranscriptionConfig

    audio = [x.numpy() for x in _held_out_signals()]
    for source, target, pnc in CHECKED_TASKS:
        config = MultiTaskTranscriptionConfig(
            batch_size=len(audio),
            num_workers=0,
            verbose=False,
            enable_chunking=False,
            prompt={"source_lang": source, "target_lang": target, "pnc": pnc},
        )
        expected = SENTENCES[target] if pnc == "yes" else _unpunctuated(SENTENCES[target])
        texts = [hyp.text for hyp in model.transcribe(audio, override_config=config)]
        if texts != [expected] * len(audio):
            raise CheckFailed(f"tiny Canary: the fitted decoder says {texts} for {source}->{target} pnc={pnc}, expected {expected!r}")


def _save_unpacked(model: Any, out_dir: Path) -> None:
    """Save a model as an unpacked .nemo folder (config, weights and uuid-named artifacts)."""
    from nemo.core.connectors.save_restore_connector import SaveRestoreConnector

    connector = SaveRestoreConnector()
    connector.pack_nemo_file = False
    out_dir.mkdir(parents=True)
    # With pack_nemo_file=False, save_to moves the files into dirname(save_path).
    connector.save_to(model, str(out_dir / "unused.nemo"))


def _rename_artifacts(folder: Path, config_name: str) -> None:
    """Replace NeMo's random uuid artifact prefixes by content hashes so that rebuilds are identical."""
    config = folder / config_name
    text = config.read_text()
    for ref in sorted(set(re.findall(r"nemo:([0-9a-f]{32})_([\w.]+)", text))):
        old = f"{ref[0]}_{ref[1]}"
        digest = hashlib.sha256((folder / old).read_bytes()).hexdigest()[:32]
        new = f"{digest}_{ref[1]}"
        (folder / old).rename(folder / new)
        text = text.replace(f"nemo:{old}", f"nemo:{new}")
    config.write_text(text)


def _pack(folder: Path, nemo_path: Path) -> None:
    def normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mode = 0o755 if info.isdir() else 0o644
        return info

    tmp = nemo_path.with_suffix(".nemo.tmp")
    with tarfile.open(tmp, "w:", format=tarfile.PAX_FORMAT) as tar:
        tar.add(folder, arcname=".", recursive=False, filter=normalize)
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=f"./{path.name}", filter=normalize)
    tmp.replace(nemo_path)


def build(out_dir: Path, fit: bool = True, shape: Shape = SHAPES["tiny"]) -> dict[str, Any]:
    """Write the .nemo into out_dir; returns the fit's figures (empty without fitting)."""
    from nemo.collections.asr.models import EncDecCTCModelBPE, EncDecMultiTaskModel
    from nemo.utils import logging as nemo_logging
    from omegaconf import OmegaConf

    nemo_logging.setLevel(logging.WARNING)
    # The decoder's _target_ is a factory function, as in Canary's own configs: hydra logs an error, NeMo falls back.
    logging.getLogger("hydra.utils").addFilter(lambda record: not record.getMessage().startswith("Error getting class at"))
    out_dir.mkdir(parents=True, exist_ok=True)
    nemo_path = out_dir / shape.nemo_name

    with tempfile.TemporaryDirectory(prefix="tiny-canary-") as tmp_name:
        tmp = Path(tmp_name)
        extra_text = _pseudo_words(PRODUCTION_CORPUS_LINES) if shape.vocab_size > VOCAB_SIZE else ""
        canary_tok = _train_tokenizer(tmp, "canary_tokenizer", shape.vocab_size, SPECIAL_TOKENS, extra_text)
        _check_special_ids(canary_tok / "tokenizer.model")
        aligner_tok = _train_tokenizer(tmp, "aligner_tokenizer", ALIGNER_VOCAB_SIZE, None)

        _seed_everything(SEED)
        aligner = EncDecCTCModelBPE(cfg=OmegaConf.create(_aligner_cfg(aligner_tok)))
        aligner.eval()
        aligner_dir = tmp / "aligner"
        _save_unpacked(aligner, aligner_dir)

        _seed_everything(SEED + 1)
        model = EncDecMultiTaskModel(cfg=OmegaConf.create(_canary_cfg(canary_tok, shape)))
        figures: dict[str, Any] = {}
        if fit:
            figures = fit_decoder(model)
            check_sentences(model)
        model.eval()
        model_dir = tmp / "model"
        _save_unpacked(model, model_dir)

        _rename_artifacts(aligner_dir, "model_config.yaml")
        _rename_artifacts(model_dir, "model_config.yaml")
        for path in aligner_dir.iterdir():
            name = {"model_config.yaml": "timestamps_asr_model_config.yaml", "model_weights.ckpt": "timestamps_asr_model_weights.ckpt"}
            shutil.move(path, model_dir / name.get(path.name, path.name))
        _pack(model_dir, nemo_path)

        n_main = sum(p.numel() for p in model.parameters())
        n_aligner = sum(p.numel() for p in aligner.parameters())
        print(f"main model: {n_main / 1e6:.2f} M params, aligner: {n_aligner / 1e6:.2f} M params, vocab {model.tokenizer.vocab_size}")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="output directory; receives " + NEMO_NAME)
    parser.add_argument("--random-decoder", action="store_true", help="skip fitting the decoder (it then repeats one token)")
    parser.add_argument(
        "--shape", choices=sorted(SHAPES), default="tiny", help="tiny (default) or production: canary-1b-v2's dimensions, random weights"
    )
    args = parser.parse_args(argv)
    shape = SHAPES[args.shape]
    with build_report(args.out, "canary") as report:
        if args.shape != "tiny":  # the tiny build's report stays as it was
            report["shape"] = args.shape
        report.update(build(args.out, fit=not args.random_decoder and args.shape == "tiny", shape=shape))
    return 0


if __name__ == "__main__":
    sys.exit(main())
