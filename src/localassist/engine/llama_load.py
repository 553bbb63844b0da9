"""Making a ``llama_cpp.Llama`` with the model parameters its constructor does not take,
and deciding whether llama.cpp may repack the weights on this CPU.

llama.cpp can keep weights in "extra buffer types": layouts repacked for the CPU's
widest kernels (``CPU_REPACK``, and ``AMX`` on Xeons with Advanced Matrix Extensions).
On AMX machines (Sapphire Rapids and newer) its AMX matrix multiply crashes the process
at the first decode (llama.cpp issue #20824: SIGSEGV in ``ggml_backend_amx_mul_mat``;
``llama-server`` from the same source dies too and runs with ``--no-repack``). The fix
is llama.cpp's own switch, ``llama_model_params.use_extra_bufts = false`` (what
``--no-repack`` and ``llama-bench --repack 0`` set). ``Llama()`` has no argument for it
and fills its ``model_params`` and loads the model in the same call, so the subclass
below sees the parameters as they are assigned (a property) and sets the field before
the load: local to the one object, no global state is patched.

``repack`` setting: ``auto`` turns extra buffer types off where llama.cpp reports
``AMX_INT8 = 1`` in its system info and leaves them on elsewhere; ``on`` and ``off``
force it.
"""

from __future__ import annotations

import re
from typing import Any

REPACK_CHOICES = ("auto", "on", "off")
_AMX = re.compile(r"\bAMX_INT8\s*=\s*1\b")

_classes: dict[int, type] = {}


def system_info(llama_cpp: Any) -> str:
    """llama.cpp's own report of the CPU features it was built for and found."""
    raw = llama_cpp.llama_print_system_info()
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def decide_repack(setting: str, info: str) -> tuple[bool, str]:
    """Whether llama.cpp may use extra buffer types (repacked weights), and why."""
    if setting == "on":
        return True, "repack=on was asked for"
    if setting == "off":
        return False, "repack=off was asked for"
    if setting != "auto":
        raise ValueError(f"repack must be one of {', '.join(REPACK_CHOICES)} (got {setting!r})")
    if _AMX.search(info):
        return False, "llama.cpp reports AMX_INT8 = 1, and its AMX kernels crash (llama.cpp issue #20824)"
    return True, "no AMX in llama.cpp's system info"


def llama_class(llama_cpp: Any) -> type:
    """``llama_cpp.Llama`` with a ``use_extra_bufts`` keyword (default: llama.cpp's own)."""
    key = id(llama_cpp.Llama)
    cls = _classes.get(key)
    if cls is None:

        class Llama(llama_cpp.Llama):
            _use_extra_bufts: bool | None = None

            def __init__(self, *args: Any, use_extra_bufts: bool | None = None, **kwargs: Any) -> None:
                self._use_extra_bufts = use_extra_bufts
                super().__init__(*args, **kwargs)

            @property
            def model_params(self) -> Any:
                return self._model_params

            @model_params.setter
            def model_params(self, params: Any) -> None:
                # Llama.__init__ assigns llama_model_default_params() and fills it field by
                # field before loading: this is the one moment the field can be set.
                if self._use_extra_bufts is not None:
                    params.use_extra_bufts = self._use_extra_bufts
                self._model_params = params

        cls = _classes[key] = Llama
    return cls


def new_llama(*, repack: str = "auto", **kwargs: Any) -> tuple[Any, bool, str]:
    """A loaded ``Llama`` (keyword arguments as ``llama_cpp.Llama`` takes them), whether
    extra buffer types were allowed, and why. For localassist's backends, benchmarks and
    the tests' oracles alike, so none of them crashes on an AMX machine."""
    import llama_cpp

    allowed, reason = decide_repack(repack, system_info(llama_cpp))
    llm = llama_class(llama_cpp)(use_extra_bufts=allowed, **kwargs)
    if "_model_params" not in vars(llm):  # a llama-cpp-python that no longer assigns model_params
        llm.close()
        raise RuntimeError("this llama-cpp-python version loads without model_params: repack cannot be set")
    return llm, allowed, reason
