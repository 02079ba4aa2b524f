"""Inference engine: device policy, image I/O, tiling, running models. Never imports the CLI,
the training subsystem, typer or rich."""
