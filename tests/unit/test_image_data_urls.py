"""data: URL images against MAX_IMAGE_BYTES, without a server: the decoded size decides, not the
length of the base64 text (whose padding adds up to 2 bytes)."""

from __future__ import annotations

import base64

import pytest

from passerelle.chat.images import ImageLoader
from passerelle.core.config import Settings
from passerelle.core.errors import APIError


@pytest.mark.parametrize("cap", [3000, 3001, 3002])  # each remainder modulo 3: the base64 text pads differently
def test_the_decoded_size_is_held_to_the_cap(cap: int) -> None:
    loader = ImageLoader(Settings(_env_file=None, max_image_bytes=cap))  # type: ignore[call-arg]
    for size in (cap - 2, cap - 1, cap):
        url = "data:image/png;base64," + base64.b64encode(b"\x89" * size).decode()
        assert len(loader._decode_data_url(url, "image")) == size
    with pytest.raises(APIError) as refused:
        loader._decode_data_url("data:image/png;base64," + base64.b64encode(b"\x89" * (cap + 1)).decode(), "image")
    assert (refused.value.status, refused.value.code, refused.value.message) == (
        413,
        "image_too_large",
        f"image is larger than {cap} bytes",
    )


def test_a_text_longer_than_any_image_under_the_cap_is_refused_before_decoding() -> None:
    """Not valid base64 either: the size is refused first, without decoding it."""
    loader = ImageLoader(Settings(_env_file=None, max_image_bytes=30))  # type: ignore[call-arg]
    with pytest.raises(APIError) as refused:
        loader._decode_data_url("data:image/png;base64," + "!" * 41, "image")
    assert refused.value.code == "image_too_large"
    with pytest.raises(APIError) as invalid:
        loader._decode_data_url("data:image/png;base64," + "!" * 40, "image")
    assert invalid.value.code == "invalid_image"
