"""Images from chat messages: data: URLs, or http(s) URLs fetched under SSRF rules, pixel-capped.

The backend decodes images with PIL inside Triton, so every image is checked here first:
its format, its declared size against MAX_IMAGE_PIXELS (before decoding, which stops
decompression bombs), and then a full decode. URL fetching is off unless ALLOW_IMAGE_URLS;
then only allowlisted hosts, never a private address unless its network is allowlisted,
each redirect and every resolved address re-checked, and the connection made to the very
address that was checked (no DNS rebinding between check and use).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import ipaddress
import re
import socket
import warnings
from urllib.parse import urljoin, urlsplit

import httpx
from PIL import Image, UnidentifiedImageError

from passerelle.core.config import Settings
from passerelle.core.errors import InvalidRequest, PayloadTooLarge

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[^;,]*)*)(?P<b64>;base64)?,(?P<data>.*)$", re.S)
_FORMATS = {"PNG", "JPEG", "WEBP", "GIF", "BMP"}
_REDIRECTS = {301, 302, 303, 307, 308}


class ImageLoader:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.networks = [ipaddress.ip_network(net, strict=False) for net in settings.image_url_allowed_private_networks]

    async def fetch(self, url: str, param: str) -> str | bytes:
        """The image's source, on the event loop: a data: URL as it is (decoded later, off the loop),
        or the bytes of an http(s) URL, fetched behind the allowlist and the address checks."""
        if url.startswith("data:"):
            return url
        if url.lower().startswith(("http://", "https://")):
            return await self._fetch(url, param)
        raise InvalidRequest("image_url.url must be a data: URL or an http(s) URL", param=param, code="invalid_image_url")

    def prepare(self, source: str | bytes, param: str) -> str:
        """CPU-bound (run it off the loop): decode and check the image; return it as base64 (no data:
        prefix), as the backend's `image` tensor wants it."""
        data = self._decode_data_url(source, param) if isinstance(source, str) else source
        self._check_image(data, param)
        return base64.b64encode(data).decode("ascii")

    def _decode_data_url(self, url: str, param: str) -> bytes:
        match = _DATA_URL.match(url)
        if not match or not match.group("b64"):
            raise InvalidRequest(
                "image data: URLs must be base64-encoded (data:image/png;base64,...)", param=param, code="invalid_image_url"
            )
        payload = match.group("data")
        limit = self.settings.max_image_bytes
        too_large = PayloadTooLarge(f"image is larger than {limit} bytes", param=param, code="image_too_large")
        if len(payload) > 4 * -(-limit // 3):  # longer than the base64 of `limit` bytes: refused before decoding
            raise too_large
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest(f"image data: URL is not valid base64: {exc}", param=param, code="invalid_image") from exc
        if len(data) > limit:  # the decoded size, as for URLs: padding makes the length alone overestimate it by up to 2 bytes
            raise too_large
        return data

    def _check_image(self, data: bytes, param: str) -> None:
        if not data:
            raise InvalidRequest("image is empty", param=param, code="invalid_image")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                # Only the accepted formats' decoders ever see the bytes (Pillow tries no other plugin).
                with Image.open(io.BytesIO(data), formats=sorted(_FORMATS)) as image:
                    if image.format not in _FORMATS:
                        raise InvalidRequest(
                            f"unsupported image format {image.format}; use one of {sorted(_FORMATS)}", param=param, code="invalid_image"
                        )
                    width, height = image.size
                    if width * height > self.settings.max_image_pixels:
                        raise InvalidRequest(
                            f"image is {width}x{height} = {width * height} pixels; the limit is {self.settings.max_image_pixels}",
                            param=param,
                            code="image_too_large",
                        )
                    image.load()
        except InvalidRequest:
            raise
        except UnidentifiedImageError as exc:
            raise InvalidRequest(
                f"image is not in an accepted format ({', '.join(sorted(_FORMATS))}) or is damaged", param=param, code="invalid_image"
            ) from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InvalidRequest(f"image is too large to decode: {exc}", param=param, code="image_too_large") from exc
        except (OSError, ValueError, SyntaxError) as exc:
            raise InvalidRequest(f"image could not be decoded: {exc}", param=param, code="invalid_image") from exc

    # URL fetching -------------------------------------------------------------------------

    def _host_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        for allowed in self.settings.image_url_allowed_hosts:
            if allowed.startswith("*.") and host.endswith(allowed[1:]):
                return True
            if host == allowed:
                return True
        return False

    async def _resolve_checked(self, host: str, port: int, param: str) -> str:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise InvalidRequest(f"image host {host} cannot be resolved", param=param, code="invalid_image_url") from exc
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        for address in addresses:
            if not address.is_global and not any(address in network for network in self.networks):
                raise InvalidRequest(
                    f"image host {host} resolves to a non-public address, which is refused",
                    param=param,
                    code="image_url_forbidden",
                )
        return str(addresses[0])

    async def _fetch(self, url: str, param: str) -> bytes:
        if not self.settings.allow_image_urls:
            raise InvalidRequest(
                "Image URLs are disabled on this server; send the image inline as a base64 data: URL.",
                param=param,
                code="image_url_disabled",
            )
        timeout = self.settings.image_url_timeout_s
        try:
            async with asyncio.timeout(timeout), httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client:
                for _ in range(self.settings.image_url_max_redirects + 1):
                    parts = urlsplit(url)
                    if parts.scheme not in ("http", "https") or not parts.hostname:
                        raise InvalidRequest("image URL must be http(s) with a host", param=param, code="invalid_image_url")
                    if not self._host_allowed(parts.hostname):
                        raise InvalidRequest(f"image host {parts.hostname} is not allowlisted", param=param, code="image_url_forbidden")
                    port = parts.port or (443 if parts.scheme == "https" else 80)
                    address = await self._resolve_checked(parts.hostname, port, param)
                    literal = f"[{address}]" if ":" in address else address
                    pinned = parts._replace(netloc=f"{literal}:{port}").geturl()
                    request = client.build_request(
                        "GET", pinned, headers={"Host": parts.netloc.rsplit("@", 1)[-1]}, extensions={"sni_hostname": parts.hostname}
                    )
                    response = await client.send(request, stream=True)
                    try:
                        if response.status_code in _REDIRECTS and "location" in response.headers:
                            url = urljoin(url, response.headers["location"])
                            continue
                        if response.status_code != 200:
                            raise InvalidRequest(f"image URL answered HTTP {response.status_code}", param=param, code="invalid_image_url")
                        return await self._read_limited(response, param)
                    finally:
                        await response.aclose()
                raise InvalidRequest("image URL redirected too many times", param=param, code="invalid_image_url")
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise InvalidRequest(f"image URL did not answer within {timeout} s", param=param, code="invalid_image_url") from exc
        except httpx.HTTPError as exc:
            raise InvalidRequest(f"image URL could not be fetched: {exc}", param=param, code="invalid_image_url") from exc

    async def _read_limited(self, response: httpx.Response, param: str) -> bytes:
        limit = self.settings.max_image_bytes
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"image is larger than {limit} bytes", param=param, code="image_too_large")
        buffer = bytearray()
        async for chunk in response.aiter_bytes():
            buffer.extend(chunk)
            if len(buffer) > limit:
                raise PayloadTooLarge(f"image is larger than {limit} bytes", param=param, code="image_too_large")
        return bytes(buffer)
