"""Training subsystem (STYLE §12): degradations, losses, discriminators, and later stages/trainer.

Imports ``realsr_cli.models`` / ``realsr_cli.engine`` only; never ``realsr_cli.cli``. Nothing in
``models`` or ``engine`` imports this package (``tests/test_layers.py``). Subpackages are imported
explicitly (``from realsr_cli.training.degradations import degrade``); this module stays empty so
importing it costs nothing.
"""
