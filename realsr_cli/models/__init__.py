"""Pure nn.Modules, one package per paper; shared layers live in ``models/_blocks``."""
