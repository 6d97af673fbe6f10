"""README's dashboard tour: small PNGs from the screenshots that the end-to-end run saved
(artifacts/dashboard/, written by tests/test_dashboard_e2e.py) into docs/images/.

    scripts/test tests/test_dashboard_e2e.py && "$ADAPTER_PY" scripts/readme_screenshots.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "artifacts" / "dashboard"
TARGET = REPO / "docs" / "images"
# shot -> (width, most height kept from the top)
TOUR = {
    "overview-desktop-light": (900, 1500),
    "models-desktop-light": (900, 1000),
    "playground-chat": (900, 800),
    "playground-audio-result": (900, 800),
    "settings-desktop-light": (900, 900),
    "models-phone-dark": (300, 1300),
}


def main() -> None:
    TARGET.mkdir(parents=True, exist_ok=True)
    for name, (width, most_height) in TOUR.items():
        image = Image.open(SOURCE / f"{name}.png").convert("RGB")
        scale = width / image.width
        image = image.resize((width, round(image.height * scale)), Image.Resampling.LANCZOS)
        image = image.crop((0, 0, width, min(image.height, most_height)))
        small = image.quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        small.save(TARGET / f"dashboard-{name}.png", optimize=True)
        print(f"docs/images/dashboard-{name}.png: {(TARGET / f'dashboard-{name}.png').stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
