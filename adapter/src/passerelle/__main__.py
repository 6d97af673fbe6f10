"""`python -m passerelle`: serve the adapter with uvicorn, configured from the environment."""

import uvicorn

from passerelle.core.config import Settings
from passerelle.main import create_app


def main() -> None:
    settings = Settings()
    uvicorn.run(
        create_app(settings), host=settings.adapter_host, port=settings.adapter_port, log_level=settings.log_level.lower(), access_log=False
    )


if __name__ == "__main__":
    main()
