"""Reading `paddle.save` files without running code.

`paddle.load` unpickles with the full pickle machinery, so a state file (a resume checkpoint
left in an attempt directory, or a `model.pdparams` someone sent) can name `os.system` and run
it. Every paddle state this package reads goes through `hm_shared.safe_pickle.restricted_loads`
instead, the rule the detector pickles follow (and `torch.load(weights_only=True)` on the torch
side): numpy arrays and plain containers only. `paddle.save` stores each tensor as the tuple
`(name, array)`; those come back as the arrays, which `set_state_dict` of layers and optimisers
accepts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hm_shared.errors import HmDataError
from hm_shared.safe_pickle import restricted_loads


def _arrays(obj: Any) -> Any:
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[1], np.ndarray):
        return obj[1]  # a saved tensor: (name, value)
    if isinstance(obj, dict):
        return {key: _arrays(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_arrays(value) for value in obj]
    return obj


def load_state(path: Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The dict saved by `paddle.save` at `path`, tensors as numpy arrays; `HmDataError` names
    the file when it is unreadable, refers to code, or lacks one of the `required` keys."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HmDataError(f"cannot read paddle state ({exc.strerror})", path) from exc
    state = _arrays(restricted_loads(data, source=path))
    if not isinstance(state, dict):
        raise HmDataError(f"holds a {type(state).__name__}; expected a paddle state dict", path)
    missing = [key for key in required if key not in state]
    if missing:
        raise HmDataError(f"missing {missing}; expected a state with {list(required)}", path)
    return state


__all__ = ["load_state"]
