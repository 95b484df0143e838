"""Search spaces behind one protocol, registered by name (`get`, `register`); no
optimisers and no JAX at import.

``jaxnas.spaces.get("darts")`` is the DARTS cell space, ``get("chain", space="digits",
num_classes=10)`` a chain space, ``get("nb201")`` the NAS-Bench-201 cell space;
`space_of(arch)` is the space an architecture belongs to, `from_json` / `from_spec`
read any space's JSON or command-line spec.
"""

from jaxnas.spaces.base import (Space, from_json, from_spec, get, names, register,
                                space_of)
from jaxnas.spaces import chain as _chain  # noqa: F401  (registers "chain")
from jaxnas.spaces import darts as _darts  # noqa: F401  (registers "darts")
from jaxnas.spaces import nb201 as _nb201  # noqa: F401  (registers "nb201")

__all__ = ["Space", "from_json", "from_spec", "get", "names", "register", "space_of"]
