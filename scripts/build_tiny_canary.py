#!/usr/bin/env python3
"""Build a tiny Canary model (.nemo) of the production class for offline tests.

    python scripts/build_tiny_canary.py --out DIR [--random-decoder]

DIR receives ``canary-tiny.nemo`` (about 3 MB): a NeMo ``EncDecMultiTaskModel``
(the class of nvidia/canary-1b-v2) with ``prompt_format: canary2``, restored in
about a second on CPU.  Nothing is downloaded: both tokenizers are trained here
on a built-in corpus, weights come from fixed seeds, and the archive is packed
deterministically (sorted members, zeroed mtimes and owners, artifact names
from content hashes instead of NeMo's random uuids), so two builds are
byte-identical.  A build takes 20-40 s on 2 cores, most of it importing NeMo.

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
align, nothing to check), so the decoder and the head's bias are fitted for
``IMPRINT_STEPS`` deterministic steps (single-threaded, a few seconds) to say
``SENTENCES[target_lang]`` whatever the audio: "Hello world, this is a test."
for en, "Hallo Welt, das ist ein Test." for de (so translation is visible), and
so on; with ``pnc=no`` the same sentence lowercase without punctuation.  Word
times come from the random aligner, so they are valid but meaningless.
``--random-decoder`` skips the fitting.

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
from pathlib import Path
from typing import Any

# Set before NeMo (and huggingface_hub through it) is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

SEED = 1234
NEMO_NAME = "canary-tiny.nemo"
SAMPLE_RATE = 16000
N_MELS = 128
VOCAB_SIZE = 256
ALIGNER_VOCAB_SIZE = 96
IMPRINT_STEPS = 100

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


def _train_tokenizer(work_dir: Path, name: str, vocab_size: int, user_symbols: list[str] | None) -> Path:
    """Train a BPE model on the corpus into work_dir/name; returns that directory (tokenizer.model, vocab.txt, ...)."""
    import sentencepiece
    from nemo.collections.common.tokenizers.sentencepiece_tokenizer import create_spt_model

    sentencepiece.set_random_generator_seed(SEED)
    sentencepiece.set_min_log_level(2)
    corpus = work_dir / "corpus.txt"
    corpus.write_text(_corpus(), encoding="utf-8")
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


def _fastconformer_cfg(n_layers: int, d_model: int, subsampling_factor: int) -> dict[str, Any]:
    return {
        "_target_": "nemo.collections.asr.modules.ConformerEncoder",
        "feat_in": N_MELS,
        "feat_out": -1,
        "n_layers": n_layers,
        "d_model": d_model,
        "subsampling": "dw_striding",
        "subsampling_factor": subsampling_factor,
        "subsampling_conv_channels": d_model,
        "causal_downsampling": False,
        "ff_expansion_factor": 4,
        "self_attention_model": "rel_pos",
        "n_heads": 4,
        "att_context_size": [-1, -1],
        "xscaling": True,
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


def _canary_cfg(tokenizer_dir: Path) -> dict[str, Any]:
    hidden = 64
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
        "model_defaults": {"asr_enc_hidden": hidden, "lm_enc_hidden": hidden, "lm_dec_hidden": hidden},
        "preprocessor": _preprocessor_cfg(),
        "encoder": _fastconformer_cfg(n_layers=2, d_model=hidden, subsampling_factor=8),
        "transf_decoder": {
            "_target_": "nemo.collections.asr.modules.transformer.get_nemo_transformer",
            "model_name": None,
            "pretrained": False,
            "encoder": None,
            "pre_ln_final_layer_norm": True,
            "config_dict": {
                "max_sequence_length": 512,
                "num_token_types": 0,
                "embedding_dropout": 0.0,
                "learn_positional_encodings": False,
                "hidden_size": hidden,
                "inner_size": 4 * hidden,
                "num_layers": 2,
                "num_attention_heads": 4,
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


def _synthetic_signals(count: int = 8) -> list[torch.Tensor]:
    """Noise bursts, pitched tones and silence of 0.5-6 s: stand-ins for speech when fitting the decoder."""
    gen = torch.Generator().manual_seed(SEED)
    signals = []
    for i in range(count):
        n = int(SAMPLE_RATE * (0.5 + 5.5 * i / (count - 1)))
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


def _imprint_decoder(model: Any, steps: int) -> None:
    """Fit the decoder (and head bias) so that greedy decoding says SENTENCES[target_lang] whatever the audio.

    A random transformer decoder repeats one token up to the length limit, which leaves nothing for the aligner
    to align and nothing for tests to check.  Teacher-forced on every (source, target, pnc) prompt over the
    encoder states of a few synthetic signals, it learns to ignore the audio and emit the target language's
    sentence, punctuated and cased with ``pnc=yes``, lowercase without punctuation with ``pnc=no``, then EOS.
    The encoder, preprocessor and aligner keep their random weights.
    """

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same float reductions, hence the same weights, on every machine
    try:
        torch.manual_seed(SEED + 2)
        signals = _synthetic_signals()
        lengths = torch.tensor([len(x) for x in signals])
        audio = torch.nn.utils.rnn.pad_sequence(signals, batch_first=True)
        model.eval()
        with torch.no_grad():
            _, _, enc_states, enc_mask = model.forward(input_signal=audio, input_signal_length=lengths)

        sequences, answer_starts = [], []
        for target in LANGUAGES:
            for pnc in ("yes", "no"):
                turns = model.prompt.get_default_dialog_slots()
                # The source slot is a placeholder, overwritten below with a random language at every step.
                turns[0]["slots"].update(source_lang=target, target_lang=target, pnc=pnc)
                text = SENTENCES[target] if pnc == "yes" else _unpunctuated(SENTENCES[target])
                encoded = model.prompt.encode_dialog([*turns, {"role": "assistant", "slots": {"text": text}}])
                sequences.append(encoded["input_ids"])
                answer_starts.append(len(encoded["context_ids"]))
        pad_id = model.tokenizer.pad_id
        ids = torch.nn.utils.rnn.pad_sequence(sequences, batch_first=True, padding_value=pad_id)
        # Row 0 has source = target = LANGUAGES[0], and the template puts source_lang before target_lang.
        source_pos = int((ids[0] == model.tokenizer.token_to_id(f"<|{LANGUAGES[0]}|>")).nonzero()[0])
        lang_ids = torch.tensor([model.tokenizer.token_to_id(f"<|{lang}|>") for lang in LANGUAGES])
        positions = torch.arange(ids.shape[1] - 1)
        seq_lens = torch.tensor([len(x) for x in sequences])
        # Loss on the answer tokens (EOS included) only: label position p predicts token p + 1.
        loss_mask = (positions >= torch.tensor(answer_starts)[:, None] - 1) & (positions < seq_lens[:, None] - 1)
        decoder_mask = (positions < seq_lens[:, None] - 1).long()
        labels = ids[:, 1:]

        params = [*model.transf_decoder.parameters(), model.log_softmax.mlp.layer0.bias]
        optimizer = torch.optim.Adam(params, lr=5e-3)
        model.transf_decoder.train()
        started = time.monotonic()
        for _ in range(steps):
            inputs = ids[:, :-1].clone()
            inputs[:, source_pos] = lang_ids[torch.randint(len(LANGUAGES), (len(sequences),))]
            which_signal = torch.randint(len(signals), (len(sequences),))
            dec_states = model.transf_decoder(
                input_ids=inputs,
                decoder_mask=decoder_mask,
                encoder_embeddings=enc_states[which_signal],
                encoder_mask=enc_mask[which_signal],
            )
            log_probs = model.log_softmax(hidden_states=dec_states)
            nll = -log_probs.gather(-1, labels[..., None]).squeeze(-1)
            loss = nll[loss_mask].mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.transf_decoder.eval()
        print(f"decoder fitted: {steps} steps in {time.monotonic() - started:.1f} s, final loss {loss.item():.4f}")
    finally:
        torch.set_num_threads(threads)


def _check_sentences(model: Any) -> None:
    """Greedy-decode two synthetic signals the fitting never saw and compare with SENTENCES."""
    from nemo.collections.asr.models.aed_multitask_models import MultiTaskTranscriptionConfig

    gen = torch.Generator().manual_seed(SEED + 3)
    audio = [(0.05 * torch.randn(n, generator=gen)).numpy() for n in (SAMPLE_RATE * 2, SAMPLE_RATE * 7)]
    for source, target, pnc in (("en", "en", "yes"), ("fr", "de", "no")):
        config = MultiTaskTranscriptionConfig(
            batch_size=2,
            num_workers=0,
            verbose=False,
            enable_chunking=False,
            prompt={"source_lang": source, "target_lang": target, "pnc": pnc},
        )
        expected = SENTENCES[target] if pnc == "yes" else _unpunctuated(SENTENCES[target])
        texts = [hyp.text for hyp in model.transcribe(audio, override_config=config)]
        if texts != [expected] * len(audio):
            raise RuntimeError(f"fitted decoder says {texts} for {source}->{target} pnc={pnc}, expected {expected!r}")


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


def build(out_dir: Path, imprint_steps: int = IMPRINT_STEPS) -> Path:
    from nemo.collections.asr.models import EncDecCTCModelBPE, EncDecMultiTaskModel
    from nemo.utils import logging as nemo_logging
    from omegaconf import OmegaConf

    nemo_logging.setLevel(logging.WARNING)
    # The decoder's _target_ is a factory function, as in Canary's own configs: hydra logs an error, NeMo falls back.
    logging.getLogger("hydra.utils").addFilter(lambda record: not record.getMessage().startswith("Error getting class at"))
    out_dir.mkdir(parents=True, exist_ok=True)
    nemo_path = out_dir / NEMO_NAME

    with tempfile.TemporaryDirectory(prefix="tiny-canary-") as tmp_name:
        tmp = Path(tmp_name)
        canary_tok = _train_tokenizer(tmp, "canary_tokenizer", VOCAB_SIZE, SPECIAL_TOKENS)
        _check_special_ids(canary_tok / "tokenizer.model")
        aligner_tok = _train_tokenizer(tmp, "aligner_tokenizer", ALIGNER_VOCAB_SIZE, None)

        _seed_everything(SEED)
        aligner = EncDecCTCModelBPE(cfg=OmegaConf.create(_aligner_cfg(aligner_tok)))
        aligner.eval()
        aligner_dir = tmp / "aligner"
        _save_unpacked(aligner, aligner_dir)

        _seed_everything(SEED + 1)
        model = EncDecMultiTaskModel(cfg=OmegaConf.create(_canary_cfg(canary_tok)))
        if imprint_steps > 0:
            _imprint_decoder(model, imprint_steps)
            _check_sentences(model)
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
    return nemo_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="output directory; receives " + NEMO_NAME)
    parser.add_argument("--random-decoder", action="store_true", help="skip fitting the decoder (it then repeats one token)")
    args = parser.parse_args(argv)
    start = time.monotonic()
    nemo_path = build(args.out, imprint_steps=0 if args.random_decoder else IMPRINT_STEPS)
    size_mb = nemo_path.stat().st_size / 1e6
    print(f"wrote {nemo_path} ({size_mb:.1f} MB) in {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
