"""realsr: real-world image super-resolution (FeMaSR, UGTSR, RealSRT, UPSR, SSR).

The stable Python API lives here; importing this package does not import the CLI
(typer/rich) nor the training subsystem.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_model", "convert_checkpoint", "upscale_folder"]


def __getattr__(name: str):  # lazy: keep `import realsr_cli` cheap
    if name in ("load_model", "convert_checkpoint"):
        from realsr_cli.engine import api

        return getattr(api, name)
    if name == "upscale_folder":
        from realsr_cli.engine import folder

        return folder.upscale_folder
    raise AttributeError(f"module 'realsr_cli' has no attribute {name!r}")
