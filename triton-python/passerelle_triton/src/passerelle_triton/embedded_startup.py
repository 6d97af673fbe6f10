"""Runs at interpreter start-up in Triton's Python environment (through passerelle_triton.pth).

The Python backend stub embeds CPython with the C locale, so its default text encoding is
ASCII; torch and vLLM then fail reading their own UTF-8 files
(``UnicodeDecodeError: 'ascii' codec can't decode byte 0xe2``). ``LC_ALL`` in the server's
environment does not reach the embedded interpreter, but setting the C library's LC_CTYPE
before anything opens a file does. A .pth file is the one hook every model gets without
each of them remembering to call it, NVIDIA's vLLM backend included.
"""

import contextlib
import locale


def _use_utf8_text() -> None:
    if locale.getpreferredencoding(False).lower().replace("-", "") != "utf8":
        with contextlib.suppress(locale.Error):
            locale.setlocale(locale.LC_CTYPE, "C.UTF-8")


_use_utf8_text()
